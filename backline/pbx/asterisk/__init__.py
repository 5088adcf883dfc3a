"""The Asterisk driver: the chroot it runs from, its instances, AMI and FastAGI."""
