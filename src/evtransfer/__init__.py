"""evtransfer: dense perception for event and spike cameras by transfer from labeled RGB."""

from evtransfer.events import Events, EventsError, Spikes, TorchEvents

__version__ = "0.1.0"

__all__ = ["Events", "EventsError", "Spikes", "TorchEvents", "__version__", "load_model"]


def __getattr__(name: str):
    """`evtransfer.load_model` without importing torch models at `import evtransfer`."""
    if name == "load_model":
        from evtransfer.inference import load_model

        return load_model
    raise AttributeError(f"module 'evtransfer' has no attribute {name!r}")
