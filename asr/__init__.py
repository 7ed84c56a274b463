"""Recurrent CTC speech recognition.

import asr
model = asr.load_model("model.pt")
result = model.transcribe("clip.wav")
print(result.text, result.words)
"""

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
