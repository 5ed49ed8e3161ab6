"""The client: what ``start``, ``lookup``, ``stop``, ``call`` and ``cast`` do, on one registry.

A :class:`Client` is the settings of a registry plus a way to publish a tracker's message (the
Celery adapter gives it one). ``Tracker.start(...)`` and the other class methods use the current
client (:func:`current`): the one a framework integration resolves for the application at hand (a
Flask app context), else the one installed last in the process, else the default one built from
the environment. Nothing here knows Celery.

``refs``        what a client hands out and publishes: :class:`TrackerRef`, the start message
``joined``      a start inside the application's own database transaction
``operations``  what an operator does besides start and stop: restart now, workers, history
``bulk``        many trackers of one kind at once: start_many, lookup_many
``core``        the :class:`Client`, and which one is current
"""

from tracking.client.core import Client, add_resolver, current, installed, set_fallback, use
from tracking.client.joined import AppTransaction, add_finder, in_transaction, open_transaction
from tracking.client.refs import Publication, Publish, Publishable, TrackerRef, publish_or_warn, running_here

__all__ = [
    "AppTransaction",
    "Client",
    "Publication",
    "Publish",
    "Publishable",
    "TrackerRef",
    "add_finder",
    "add_resolver",
    "current",
    "in_transaction",
    "installed",
    "open_transaction",
    "publish_or_warn",
    "running_here",
    "set_fallback",
    "use",
]
