"""Alert links: the token (tokens.py), the page it opens (page.py, pure) and its HTTP shell
(server.py)."""
