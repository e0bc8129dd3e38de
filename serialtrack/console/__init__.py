"""The web console: customer service, loss prevention, recall managers and store managers in a browser.

A client of the four services' HTTP APIs only (it forwards the signed-in user's token, so each
service decides what that user may see, exactly as for `curl`); it keeps no data of its own
besides the sessions in its memory. Served by `serialtrack up` (serialtrack/runner.py starts it
after the services) and by `serialtrack console` (its own container in docker-compose.yml).

- ``signin``: the one-time sign-in link `serialtrack up` prints, and in-memory sessions;
- ``backend``: the services, called with the user's token, and what is down;
- ``story``: one unit's timeline across the services (pure);
- ``charts``: the SVG the pages draw (pure);
- ``app``: the pages, the live parts (server-sent events) and the downloads;
- ``process``: the child process `serialtrack up` supervises.
"""
