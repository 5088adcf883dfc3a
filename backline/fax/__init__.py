"""Fax intake and TIFF to PDF."""
