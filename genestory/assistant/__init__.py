"""GeneStory's guest assistant: its knowledge base (for the demo workflow) and its prompt.

guest_queue ships neutral defaults; genestory/settings.py passes these through
GUEST_WORKFLOW_OPTIONS.
"""

#: The demo workflow's ``knowledge`` option: this package's ``knowledge/{en,vi}.json``.
KNOWLEDGE = "genestory.assistant.knowledge"
