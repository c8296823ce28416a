"""Files acrelease writes for users; read them with ``acrelease.read_template(name)``."""
