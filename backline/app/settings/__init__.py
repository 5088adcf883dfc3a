"""The config's sections, one module each, read through the generic accessors of
:mod:`backline.app.settings.reader`; :mod:`backline.app.config` puts them together."""
