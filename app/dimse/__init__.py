"""The DICOM DIMSE receiver (C-ECHO, C-STORE): app/dimse/server.py."""
