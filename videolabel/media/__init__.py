"""Media access through the ffmpeg binary: locating it, probing files, decoding clip windows."""

from videolabel.media.binary import ffmpeg_version, find_ffmpeg
from videolabel.media.decode import decode_audio, decode_frames
from videolabel.media.probe import MediaError, MediaInfo, measure_duration, parse_probe_output, probe

__all__ = [
    "MediaError", "MediaInfo", "decode_audio", "decode_frames", "ffmpeg_version", "find_ffmpeg",
    "measure_duration", "parse_probe_output", "probe",
]
