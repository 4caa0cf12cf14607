"""The web console at /console: sign-in sessions (sessions.py, session_routes.py) and the built single-page app
(spa.py, static/). mount.py puts both on an app; `qwen3-api serve --no-console` leaves them off."""
