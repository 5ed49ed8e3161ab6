"""Integrations with web frameworks: :mod:`tracking.contrib.flask` (a Flask extension) and
:mod:`tracking.contrib.django` (a Django app); and with monitoring: :mod:`tracking.contrib.prometheus`
(metrics read from the registry). Each needs its library installed (``pip install "tracking[flask]"``,
``"tracking[django]"`` or ``"tracking[prometheus]"``)."""
