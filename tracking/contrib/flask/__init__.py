"""The Flask integration: the extension and the trackers pages.

- :class:`Tracking` (:mod:`.extension`): settings from ``app.config``, a Celery app to publish
  trackers with, and the ``flask tracking ...`` commands; stored in ``app.extensions["tracking"]``.
- :func:`blueprint` (:mod:`.views`, :mod:`.api`): the trackers pages (a list, one tracker, and
  its Stop, Restart now and Start afresh buttons) and a JSON API, for an app to mount::

      from tracking.contrib.flask import Tracking, blueprint

      tracking_ext = Tracking()

      def create_app():
          app = Flask(__name__)
          tracking_ext.init_app(app)
          app.register_blueprint(blueprint(permission=can), url_prefix="/tracking")
          return app

  ``can(action, kind, transaction_id) -> bool`` guards every page (``"view"``) and action; by
  default (:func:`read_only`) anyone may look and nobody may act.
"""

from tracking.contrib.flask.extension import EXTENSION_KEY, Tracking, tracking_command
from tracking.contrib.flask.options import ACTIONS, VIEW, Permission, read_only
from tracking.contrib.flask.views import blueprint

__all__ = [
    "ACTIONS",
    "EXTENSION_KEY",
    "VIEW",
    "Permission",
    "Tracking",
    "blueprint",
    "read_only",
    "tracking_command",
]
