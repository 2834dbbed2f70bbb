"""The optional web layer (``pip install 'convgen[web]'``): ``convgen serve`` and the human evaluation study.

``server`` (FastAPI routes and the pages in ``static/``), ``catalog`` (the models a server offers, by name only),
``jobs`` (the bounded worker pool), ``tools`` (the pipeline calls the workers run, and one page per family),
``study`` (design, sessions, answers and the report of a human study) and ``store`` (SQLite or PostgreSQL).
Nothing in the rest of convgen imports this package; ``study`` and ``store`` work without the web extra, so
``convgen study create`` and ``convgen study report`` need no FastAPI.
"""
