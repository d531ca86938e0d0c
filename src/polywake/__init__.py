"""polywake: several wake words at once with one small on-device model."""

from .audio import SAMPLE_RATE, AudioError, load_audio
from .detect import Detection, Detector
from .errors import ConfigError, ModelFileError, PolywakeError

__version__ = "0.1.0"
__all__ = [
    "SAMPLE_RATE", "AudioError", "ConfigError", "Detection", "Detector", "ModelFileError",
    "PolywakeError", "load_audio",
]
