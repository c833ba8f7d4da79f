"""The queue core: plain asyncio, no Django (``.importlinter`` holds the contract).

``manager.QueueManager`` accepts requests and is composed of narrow parts: a
backend from ``backends`` holds the line and the slots (``local`` in this
process, ``redis`` shared across processes, both behind ``backends.base.Admission``,
in the order ``ordering`` sets: first come, first served, or tiers and fairness),
``reporting`` answers what the queue knows, ``stopping`` owns its tasks and the
drain, and ``answers`` reuses answers (the answer cache and single flight).
``stream`` drives one request's events through the ``StreamHost`` protocol,
``runner`` runs the workflow, and ``endings.Ending`` is how any request ends.
"""
