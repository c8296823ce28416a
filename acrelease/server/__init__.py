"""The OTA update server: an ASGI app (``app.py``) on acrelease's own HTTP/1.x front end (``http1.py``)."""
