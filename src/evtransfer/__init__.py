"""evtransfer: dense perception for event and spike cameras by transfer from labeled RGB."""

from evtransfer.events import Events, EventsError, Spikes, TorchEvents

__version__ = "0.1.0"

__all__ = ["Events", "EventsError", "Spikes", "TorchEvents", "__version__"]
