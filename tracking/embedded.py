"""The embedded broker: kombu's filesystem transport, made safe for several processes.

kombu's filesystem transport writes a message straight into the queue folder, so a consumer in
another process can take the file before it is written and read an empty message; the worker then
dies with "Unrecoverable error: JSONDecodeError" (celery/kombu#1551). Here a message is written to
a temporary folder and renamed into the queue folder when complete: a rename within one filesystem
is atomic, so a consumer sees a whole message or none.

Importing ``tracking`` registers the transport as ``embedded://``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

SCHEME = "embedded"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        tmp_folder = Path(self.transport_options.get("tmp_folder") or f"{self.data_folder_out}.tmp")
        tmp_folder.mkdir(parents=True, exist_ok=True)
        tmp = tmp_folder / name
        try:
            with open(tmp, "wb") as f:
                f.write(dumps(payload).encode())  # type: ignore[no-untyped-call]
            os.rename(tmp, final)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to the embedded broker") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = SCHEME
    driver_name = SCHEME


def register() -> None:
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
