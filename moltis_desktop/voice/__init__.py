"""Voice on the laptop: audio I/O, wake word, transcription, speech, and the talk loop.

Heavy libraries (numpy, sounddevice, faster-whisper, piper, pyopen-wakeword) are imported by
the modules that need them, when first used: the gateway starts without any of them loaded.
"""
