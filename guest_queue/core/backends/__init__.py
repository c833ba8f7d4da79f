"""Queue backends behind one interface (``base.Admission``): ``local`` and ``redis``."""
