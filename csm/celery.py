import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csm.settings")

app = Celery("csm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def nightly_schedule(sender, **kwargs):
    """The static beat schedule: the dispatcher checks which organizations' local nightly hour has passed."""
    from django.conf import settings

    every = settings.NIGHTLY_DISPATCH_EVERY_SECONDS
    sender.conf.beat_schedule = {
        "nightly-dispatch": {
            "task": "signals.tasks.nightly_dispatch",
            "schedule": float(every),
            # A dispatch still waiting when the next one is due is redundant: let it expire.
            "options": {"expires": every},
        }
    }
