"""The Asterisk modules Backline runs with: `modules.conf` with autoload off.

Autoload pulls in ~350 modules, about 40 of which decline and one of which
(app_voicemail_odbc) fights app_voicemail for the same applications.  With
autoload off Asterisk does *not* resolve dependencies for us, so every module a
needed module leans on is listed explicitly.  Each entry is `require`d: if one
fails, Asterisk refuses to start, which beats a PBX that boots without fax or
voicemail and is only found out when a patient calls.
"""

from __future__ import annotations

# (module, why) in load-order-agnostic groups; Asterisk sorts by load priority.
REQUIRED_MODULES: tuple[tuple[str, str], ...] = (
    # --- sorcery backends: res_pjsip keeps its objects in config files,
    # memory (dynamic contacts) and astdb (registrations survive restarts).
    ("res_sorcery_config", "pjsip.conf objects"),
    ("res_sorcery_memory", "in-memory sorcery objects"),
    ("res_sorcery_astdb", "registered contacts persist across restarts"),
    # --- timing: generators (music on hold, fax, silence) need a timer source.
    ("res_timing_timerfd", "timer source for generators and fax"),
    # --- SIP stack
    ("res_pjproject", "pjproject glue; res_pjsip needs it"),
    ("res_pjsip", "the SIP stack"),
    ("res_pjsip_session", "INVITE sessions; chan_pjsip needs it"),
    ("res_pjsip_pubsub", "SUBSCRIBE/NOTIFY; chan_pjsip needs it (not pulled in by itself)"),
    ("chan_pjsip", "the PJSIP channel driver"),
    ("res_pjsip_authenticator_digest", "digest auth of desk phones"),
    ("res_pjsip_outbound_authenticator_digest", "answering a carrier's 401/407"),
    ("res_pjsip_outbound_registration", "registering to a carrier trunk"),
    ("res_pjsip_registrar", "desk phones REGISTER"),
    ("res_pjsip_endpoint_identifier_user", "desk phones identified by SIP user"),
    ("res_pjsip_endpoint_identifier_ip", "carriers identified by source address"),
    ("res_pjsip_nat", "rport/contact rewrite for desk phones behind NAT"),
    ("res_pjsip_path", "Path header: registrations relayed by Kamailio (several PBX nodes)"),
    ("res_pjsip_sdp_rtp", "audio in SDP"),
    ("res_pjsip_t38", "T.38 fax re-INVITEs"),
    ("res_pjsip_caller_id", "P-Asserted-Identity / Remote-Party-ID in and out"),
    # Without it the geoloc_* endpoint options are accepted and silently do nothing.
    ("res_geolocation", "locations and profiles (geolocation.conf)"),
    ("res_pjsip_geolocation", "a 911 call's location to the carrier (PIDF-LO)"),
    ("res_pjsip_header_funcs", "PJSIP_HEADER() to read carrier headers"),
    ("res_pjsip_rfc3326", "Reason header: why a call was refused"),
    ("res_pjsip_diversion", "Diversion header on forwarded carrier calls"),
    ("res_pjsip_dtmf_info", "DTMF by SIP INFO from phones that do not do RFC 4733"),
    ("res_pjsip_messaging", "SIP MESSAGE (SMS via carrier trunks)"),
    ("res_pjsip_refer", "transfers from desk phones"),
    ("res_pjsip_acl", "SIP ACLs in pjsip.conf"),
    ("res_pjsip_logger", "'pjsip set logger on' when debugging"),
    ("res_pjsip_outbound_publish", "res_pjsip_exten_state links against it"),
    ("res_pjsip_exten_state", "BLF: desk phones subscribe to hints (the outage lamp)"),
    ("res_pjsip_pidf_body_generator", "BLF NOTIFY bodies (application/pidf+xml)"),
    ("res_pjsip_xpidf_body_generator", "BLF NOTIFY bodies for older phones"),
    ("res_pjsip_dialog_info_body_generator", "BLF NOTIFY bodies (dialog-info+xml)"),
    ("res_pjsip_pidf_digium_body_supplement", "pidf supplement; avoids body warnings"),
    ("res_pjsip_pidf_eyebeam_body_supplement", "pidf supplement; avoids body warnings"),
    ("res_pjsip_mwi_body_generator", "MWI NOTIFY bodies"),
    ("res_pjsip_mwi", "voicemail waiting lamp"),
    ("func_pjsip_endpoint", "PJSIP_ENDPOINT()"),
    ("func_pjsip_contact", "PJSIP_CONTACT()"),
    ("func_pjsip_aor", "PJSIP_AOR(): which contacts a desk phone has"),
    # --- media
    ("res_rtp_asterisk", "RTP (and rtp.conf port range)"),
    ("res_srtp", "SRTP: desk phones' media encrypted (encryption: required)"),
    ("codec_ulaw", "G.711 u-law"),
    ("codec_alaw", "G.711 a-law"),
    ("codec_a_mu", "direct a-law/u-law translation"),
    ("codec_gsm", "GSM (sound files, voicemail)"),
    ("codec_resample", "16 kHz wav announcements (wav16/sln16) down to 8 kHz calls"),
    ("format_wav", "8 kHz wav: core sounds and announcements"),
    ("format_wav_gsm", "WAV49, voicemail's default storage format"),
    ("format_gsm", "gsm sound files"),
    ("format_pcm", "raw u-law/a-law files"),
    ("format_sln", "raw signed linear (rendered announcements)"),
    ("bridge_simple", "two-party bridges (answered calls)"),
    ("bridge_native_rtp", "direct RTP between two SIP legs when allowed"),
    ("bridge_builtin_features", "DTMF features (transfer, hangup) in bridges"),
    ("bridge_holding", "holding bridges (parked / held parties)"),
    ("res_musiconhold", "music on hold"),
    ("res_parking", "call parking: Park(), ParkedCall(), park: hints for BLF keys"),
    # --- fax (app_fax is gone since Asterisk 19: SendFax/ReceiveFax live in res_fax)
    ("res_fax", "SendFax/ReceiveFax"),
    ("res_fax_spandsp", "the fax engine: T.38 and G.711 audio fax"),
    # --- control: AMI extras and AGI
    ("res_speech", "needed by res_agi, not pulled in by itself"),
    ("res_agi", "AGI()/FastAGI to the controller"),
    ("res_manager_devicestate", "AMI DeviceStateChange events"),
    ("res_manager_presencestate", "AMI PresenceStateChange events"),
    ("res_clioriginate", "'channel originate' on the console"),
    ("res_security_log", "failed desk-phone auth to the security log (fail2ban)"),
    # --- dialplan
    ("pbx_config", "extensions.conf"),
    ("app_dial", "Dial()"),
    ("app_playback", "Playback() of announcements"),
    ("app_sayunixtime", "SayUnixTime(): the time in the on-site notice of a 911 call"),
    ("app_echo", "Echo() for line tests"),
    ("app_voicemail", "VoiceMail()/VoiceMailMain() (not the _odbc variant: they clash)"),
    ("app_senddtmf", "SendDTMF()"),
    ("app_read", "Read() of the feature-code PIN"),
    ("app_authenticate", "Authenticate()"),
    ("app_verbose", "Verbose()/Log()"),
    ("app_db", "DBdeltree()"),
    ("app_stack", "Gosub()/Return()"),
    ("app_exec", "Exec()/TryExec()"),
    ("app_userevent", "UserEvent() to tell the controller about dialplan steps"),
    ("app_record", "Record() of a spoken announcement"),
    ("app_softhangup", "SoftHangup() of desk phones when the outage starts"),
    ("app_dumpchan", "DumpChan() when debugging"),
    ("func_db", "DB(): the outage switch the PBX reads when the controller is away"),
    ("func_devstate", "DEVICE_STATE(Custom:...): the outage lamp; 'devstate change' CLI"),
    ("func_extstate", "EXTENSION_STATE()"),
    ("func_dialplan", "DIALPLAN_EXISTS(): is a dialled number one of ours"),
    ("func_callerid", "CALLERID()/CONNECTEDLINE()"),
    ("func_strings", "FILTER(), LEN(), etc."),
    ("func_logic", "IF(), ISNULL(), EXISTS()"),
    ("func_channel", "CHANNEL()"),
    ("func_global", "GLOBAL()"),
    ("func_cut", "CUT()"),
    ("func_math", "MATH()"),
    ("func_hangupcause", "HANGUPCAUSE(): why a desk phone did not answer"),
    ("func_timeout", "TIMEOUT(absolute): a hard cap on call length"),
    ("func_uri", "URIENCODE() for FastAGI arguments"),
    # --- the fail-safe record: every carrier call lands in a CSV the controller imports
    # when it returns, so calls answered while it was down are journaled too.
    ("cdr_csv", "Master.csv: calls answered while the controller was away"),
    ("func_cdr", "CDR(userfield): the dialled practice number"),
)


def required_modules() -> tuple[str, ...]:
    """Names of the modules (without `.so`) that modules_conf() requires."""
    return tuple(name for name, _ in REQUIRED_MODULES)


def modules_conf() -> str:
    """Render `modules.conf`: autoload off, each needed module `require`d."""
    lines = [
        "; Rendered by Backline (backline/render/modules.py); edits are overwritten.",
        "[modules]",
        "autoload = no",
    ]
    for name, why in REQUIRED_MODULES:
        lines.append(f"require = {name}.so  ; {why}")
    return "\n".join(lines) + "\n"
