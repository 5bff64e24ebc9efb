"""Video decoding: every codec/container, rotation, variable frame rate, random access, clear errors."""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import pevl.data.video as video_module
from pevl.data.video import iter_frames, probe_video, read_frames
from pevl.errors import PevlError

WIDTH, HEIGHT = 96, 64


def numbered_frame(index: int) -> np.ndarray:
    """A frame that encodes its index in 12 macroblock-aligned bright/dark squares, plus a red corner marker."""
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    for bit in range(12):
        row, col = divmod(bit, 6)
        if (index >> bit) & 1:
            image[row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = 230
    image[48:64, 0:16] = (220, 30, 30)
    return image


def frame_number(image: np.ndarray) -> int:
    """Read back the index written by :func:`numbered_frame` (stored orientation)."""
    value = 0
    for bit in range(12):
        row, col = divmod(bit, 6)
        if image[row * 16 + 8, col * 16 + 8].mean() > 135:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    num_frames: int,
    codec: str = "libx264",
    rate: int = 25,
    rotation: int | None = None,
    hflip: bool = False,
    pts_ms: list[int] | None = None,
    gop: int | None = None,
) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "12"}
    elif codec == "libvpx-vp9":
        stream.options = {"crf": "10", "b": "0"}
    else:
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = 2 * 118  # -q:v 2
    if gop:
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "12", "keyint": str(gop), "min-keyint": str(gop), "scenecut": "0"}
    if pts_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None or hflip:
        stream.set_display_rotation(rotation or 0, hflip=hflip)
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(numbered_frame(i), format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


CODECS = [
    ("h264.mp4", "libx264", "h264"),
    ("h264.mkv", "libx264", "h264"),
    ("h264_bframes.avi", "libx264", "h264"),  # AVI timestamps are decode-order counters
    ("mpeg4.avi", "mpeg4", "mpeg4"),
    ("msmpeg4.avi", "msmpeg4", "msmpeg4"),  # MS-MPEG4 v3 (DivX ;-))
    ("msmpeg4v2.avi", "msmpeg4v2", "msmpeg4v2"),
    ("vp9.webm", "libvpx-vp9", "vp9"),
    ("vp9.mkv", "libvpx-vp9", "vp9"),
]


@pytest.mark.parametrize(("name", "encoder", "decoder"), CODECS)
def test_every_codec_and_container_decodes_each_frame_once_in_order(tmp_path, name, encoder, decoder):
    path = write_video(tmp_path / name, 40, codec=encoder)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.rotation) == (40, WIDTH, HEIGHT, 0)
    assert info.codec == decoder
    assert info.fps == pytest.approx(25.0, rel=1e-3)
    assert [frame_number(f) for f in iter_frames(path)] == list(range(40))


@pytest.mark.parametrize(("name", "encoder", "decoder"), CODECS)
def test_read_frames_takes_indices_in_any_order_with_repeats(tmp_path, name, encoder, decoder):
    path = write_video(tmp_path / name, 40, codec=encoder)
    indices = [30, 2, 2, 39, 0, 17]
    frames = read_frames(path, indices)
    assert frames.shape == (6, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert [frame_number(f) for f in frames] == indices


@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_display_matrix_is_applied_so_portrait_stays_portrait(tmp_path, rotation, hflip):
    path = write_video(tmp_path / "phone.mp4", 6, rotation=rotation, hflip=hflip)
    # PyAV's convention: rotate counter-clockwise by `rotation`, then mirror.
    expected = np.rot90(numbered_frame(3), k=rotation // 90)
    if hflip:
        expected = expected[:, ::-1]
    info = probe_video(path)
    assert (info.height, info.width) == expected.shape[:2]
    if not hflip:
        assert info.rotation == rotation % 360
    streamed = list(iter_frames(path))[3]
    picked = read_frames(path, [3])[0]
    for frame in (streamed, picked):
        assert frame.shape == expected.shape
        assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 8


def test_variable_frame_rate_frames_are_counted_not_timed(tmp_path):
    gaps = [20, 20, 80, 10, 10, 150, 33, 33, 33, 60] * 3
    pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]).tolist()
    path = write_video(tmp_path / "vfr.mp4", len(pts), pts_ms=pts)
    info = probe_video(path)
    assert info.num_frames == len(pts)
    duration = (pts[-1] + gaps[-1]) / 1000
    assert info.fps == pytest.approx(len(pts) / duration, rel=0.1)
    wanted = [0, 5, 6, 29, 13]
    assert [frame_number(f) for f in read_frames(path, wanted)] == wanted


@pytest.mark.parametrize("name", ["long.mp4", "long.webm"])
def test_sparse_reads_of_a_long_video_seek_instead_of_decoding_everything(tmp_path, monkeypatch, name):
    codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
    path = write_video(tmp_path / name, 600, codec=codec, gop=25)
    decoded = []
    original_rank = video_module._rank
    monkeypatch.setattr(video_module, "_rank", lambda table, pts: decoded.append(pts) or original_rank(table, pts))
    wanted = [590, 12, 300, 301]
    assert [frame_number(f) for f in read_frames(path, wanted)] == wanted
    assert 0 < len(decoded) < 150  # three short runs after keyframes, not 591 frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_clip_cut_mid_gop_counts_only_the_frames_that_decode(tmp_path, suffix):
    # Stream copy from packet 10 on: the frames before the next keyframe (frame 25) cannot be decoded.
    source = write_video(tmp_path / "full.mp4", 100, gop=25)
    cut = tmp_path / f"cut{suffix}"
    with av.open(str(source)) as src, av.open(str(cut), "w") as dst:
        out_stream = dst.add_stream_from_template(src.streams.video[0])
        for i, packet in enumerate(p for p in src.demux(video=0) if p.size):
            if i >= 10:
                packet.stream = out_stream
                dst.mux(packet)
    info = probe_video(cut)
    frames = list(iter_frames(cut))
    assert info.num_frames == len(frames) == 75
    assert [frame_number(f) for f in read_frames(cut, [74, 0, 40])] == [99, 25, 65]


def test_only_the_wanted_frames_are_converted_and_kept(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.avi", 50, codec="mpeg4")
    converted = []
    original = video_module._to_rgb
    monkeypatch.setattr(video_module, "_to_rgb", lambda frame, o: converted.append(1) or original(frame, o))
    read_frames(path, [4, 4, 4, 20, 4])
    assert len(converted) == 2


def test_out_of_range_index_names_the_file(tmp_path):
    path = write_video(tmp_path / "short.mp4", 10)
    with pytest.raises(PevlError, match=r"short\.mp4: frame 10 requested but the video has 10 frames"):
        read_frames(path, [0, 10])
    with pytest.raises(PevlError, match="negative"):
        read_frames(path, [-1])


def test_missing_and_non_video_files_give_one_line_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    audio = tmp_path / "sound.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    cases = {tmp_path / "absent.mp4": "no such file", text: "cannot open as a video", audio: "no video stream"}
    for path, problem in cases.items():
        for call in (probe_video, lambda p: list(iter_frames(p)), lambda p: read_frames(p, [0])):
            with pytest.raises(PevlError) as err:
                call(path)
            message = str(err.value)
            assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_truncated_video_yields_what_it_has_then_a_clear_error(tmp_path):
    path = write_video(tmp_path / "cut.mkv", 60)
    with av.open(str(path)) as container:
        cut_at = [packet.pos for packet in container.demux(video=0) if packet.size][30]
    path.write_bytes(path.read_bytes()[:cut_at])  # as if the download stopped half-way
    frames = list(iter_frames(path))
    assert 0 < len(frames) < 60
    numbers = [frame_number(f) for f in frames]
    assert numbers == sorted(set(numbers))  # each decodable frame once, in display order
    with pytest.raises(PevlError, match=r"cut\.mkv"):
        read_frames(path, [59])


# Ground truth from the data's SOURCES.md: (file, width, height, frames), display orientation.
REAL_VIDEOS = [
    ("k400_arm_wrestling.mp4", 340, 256, 280),
    ("k400_clean_and_jerk.mp4", 340, 256, 300),
    ("k400_tai_chi.mp4", 340, 256, 300),
    ("k400_archery.avi", 320, 240, 131),
    ("ucf101_apply_eye_makeup.avi", 320, 240, 164),
    ("ntu_drink_water_1080p.avi", 1920, 1080, 103),
    ("ntu_two_person_1080p.avi", 1920, 1080, 72),
    ("pose2sim_lunge_portrait_60fps.mp4", 1080, 1920, 100),
    ("sports2d_walk_jump_vp9.mp4", 1768, 994, 230),
]


@pytest.mark.parametrize(("name", "width", "height", "num_frames"), REAL_VIDEOS)
def test_real_videos_decode_with_the_documented_count_size_and_orientation(
    shared_data, name, width, height, num_frames
):
    path = shared_data / "videos" / name
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (width, height, num_frames)
    count = 0
    for frame in iter_frames(path):
        assert frame.shape == (height, width, 3)
        count += 1
    assert count == num_frames


@pytest.mark.parametrize("name", ["sports2d_walk_jump_vp9.mp4", "ntu_drink_water_1080p.avi", "k400_arm_wrestling.mp4"])
def test_real_video_random_access_matches_streaming(shared_data, name):
    path = shared_data / "videos" / name
    num_frames = probe_video(path).num_frames
    wanted = [num_frames - 1, 0, num_frames // 2, 7, num_frames // 2]
    everything = list(iter_frames(path))
    picked = read_frames(path, wanted)
    for row, index in enumerate(wanted):
        assert np.array_equal(picked[row], everything[index])


# --- rawframe folders -----------------------------------------------------------------------------------------


def write_rawframes(folder: Path, count: int, start: int = 1, template: str = "img_{:05d}.jpg") -> Path:
    """A rawframe folder whose frame i shows the number i (JPEG, as MMAction2 extracts them)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(numbered_frame(i)).save(folder / template.format(i + start), quality=95)
    return folder


def test_rawframe_folder_reads_like_a_video(tmp_path):
    folder = write_rawframes(tmp_path / "v_001", 12)
    (folder / "flow_x_00001.jpg").write_bytes((folder / "img_00001.jpg").read_bytes())  # optical flow: ignored
    (folder / "notes.txt").write_text("not a frame")
    info = probe_video(folder)
    assert (info.num_frames, info.width, info.height, info.fps, info.codec) == (12, WIDTH, HEIGHT, 0.0, "rawframes")
    frames = read_frames(folder, [11, 0, 5, 5])
    assert frames.shape == (4, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert [frame_number(f) for f in frames] == [11, 0, 5, 5]
    assert [frame_number(f) for f in iter_frames(folder)] == list(range(12))
    with pytest.raises(PevlError, match="frame 12 requested but the folder has 12 frames"):
        read_frames(folder, [12])


def test_rawframes_are_ordered_by_number_whatever_the_start_and_padding(tmp_path):
    folder = write_rawframes(tmp_path / "zero_based", 11, start=0, template="frame{}.png")  # frame0 ... frame10
    assert [frame_number(f) for f in iter_frames(folder)] == list(range(11))  # frame10 after frame9, not frame1


def test_bad_rawframe_folders_are_one_line_errors(tmp_path):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    with pytest.raises(PevlError, match="empty: a folder without numbered frame images"):
        probe_video(tmp_path / "empty")
    folder = write_rawframes(tmp_path / "mixed", 2)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "img_00003.jpg")
    with pytest.raises(PevlError, match="frames of different sizes"):
        read_frames(folder, [0, 2])
    (folder / "img_00004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PevlError, match="img_00004.jpg: cannot read the frame image"):
        list(iter_frames(folder))


def test_dataset_reads_rawframe_lines_with_offsets_and_start_index(tmp_path):
    from pevl.data.datasets import DATASETS
    from pevl.data.datasets.base import ActionDataset

    write_rawframes(tmp_path / "frames" / "clip", 20, start=0)
    (tmp_path / "train.txt").write_text("clip 5 10 1\n")
    options = {"with_offset": True, "start_index": 0, "video_dir": str(tmp_path / "frames")}
    spec = DATASETS["video_list"]("video_list", "train", tmp_path, options)
    ds = ActionDataset(spec.records, ["a", "b"], use_pose=False, rawframe_start=spec.rawframe_start)
    start, count, total = ds._video_frames(0, ds.records[0])
    assert (start, count) == (5, 10)
    assert [frame_number(f) for f in ds._read(ds.records[0], np.array([0, 9]) + start)] == [5, 14]


@pytest.mark.parametrize(("start", "template"), [(1, "img_{:05d}.jpg"), (0, "frame{}.png")])
def test_rawframe_folder_opens_as_an_ffmpeg_image_sequence(tmp_path, start, template):
    from pevl.data.rawframes import ffmpeg_image_sequence

    folder = write_rawframes(tmp_path / "clip", 12, start=start, template=template)
    pattern, fmt, options = ffmpeg_image_sequence(folder)
    with av.open(pattern, format=fmt, options=options) as container:
        numbers = [frame_number(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert numbers == list(range(12))
    (folder / template.format(start + 5)).unlink()
    with pytest.raises(PevlError, match="gaps"):
        ffmpeg_image_sequence(folder)


def test_dataset_reads_a_rawframe_folder_listed_without_a_frame_count(tmp_path):
    from pevl.data.datasets import DATASETS
    from pevl.data.datasets.base import ActionDataset

    write_rawframes(tmp_path / "clip", 7, start=0, template="frame{}.png")
    (tmp_path / "train.txt").write_text("clip 1\n")
    # As MMAction2 reads it, "clip 1" names a frame folder of 1 frame, unlabelled: say the list holds videos.
    with pytest.raises(PevlError, match="line 1: no label"):
        DATASETS["video_list"]("video_list", "train", tmp_path, {})
    spec = DATASETS["video_list"]("video_list", "train", tmp_path, {"list_kind": "videos"})
    ds = ActionDataset(spec.records, ["a", "b"], use_pose=False)
    assert ds._video_frames(0, ds.records[0])[:2] == (0, 7)
    assert [frame_number(f) for f in ds._read(ds.records[0], np.array([6, 0]))] == [6, 0]
