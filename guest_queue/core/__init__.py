"""The queue core: plain asyncio, no Django.

``manager`` admits requests through a backend (``backends.local`` in this
process, ``backends.redis`` shared across processes), runs the workflow
(``runner``) and streams its events (``stream``); ``answers`` holds the answer
cache and single flight (one workflow run shared by identical questions).
"""
