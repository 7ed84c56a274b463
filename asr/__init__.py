"""Recurrent CTC speech recognition.

import asr
model = asr.load_model("model.pt")
result = model.transcribe("clip.wav")
print(result.text, result.words)
"""

import atexit
import gc

from asr.audio import SAMPLE_RATE, AudioError, load_audio
from asr.decoding import DecodingOptions, Transcription, Word
from asr.model import ModelConfig, ModelFileError, RecurrentCTC, load_model, save_model
from asr.text import CharTokenizer, normalize_text

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "CharTokenizer",
    "DecodingOptions",
    "ModelConfig",
    "ModelFileError",
    "RecurrentCTC",
    "Transcription",
    "Word",
    "load_audio",
    "load_model",
    "normalize_text",
    "save_model",
]

# At exit the interpreter walks every object it still tracks, torch's hundreds of thousands
# among them, in its last garbage collections: 0.6 s of a short script's run. Frozen there, the
# objects are freed as the modules are cleared, without those walks (benchmarks.startup).
atexit.register(gc.freeze)
