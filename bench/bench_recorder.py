"""Session recorder throughput: 1024² uint16 frames at 10 frames/s plus 10 Hz bias logging.

Run: ``.venv/bin/python -m bench bench_recorder``.

1. Throughput (frames as fast as they can be written, one bias sample per
   frame) of :class:`insitu.core.session.SessionWriter` against raw h5py writes of
   the same frames with the same chunks (one frame a chunk, resize + write per
   frame, one flush a second). Goal: ratio ≥ 0.8.
2. Real time: 10 frames/s and 10 Hz bias for a few seconds, paced; the
   writer keeps up when every write returns well inside its 100 ms slot and
   nothing is left behind at the end (lag ≈ 0).
Files go to a temporary folder on the same disk as the system temp dir.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

SHAPE = (1024, 1024)
N_FRAMES = 60          # 120 MB per run
REALTIME_S = 5.0
RATE_HZ = 10.0


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4000, SHAPE, dtype=np.uint16)
    return [np.roll(base, k, axis=1) for k in range(n)]  # distinct frames, no generation cost in the loop


def raw_h5py(path: Path, frames) -> float:
    """Frames/s for plain h5py: resizable (n, 1024, 1024) uint16, chunks (1, 1024, 1024), flush each second."""
    t0 = time.perf_counter()
    with h5py.File(path, "w", libver="latest") as f:
        ds = f.create_dataset("data", shape=(0,) + SHAPE, maxshape=(None,) + SHAPE, dtype=np.uint16,
                              chunks=(1,) + SHAPE)
        last = time.monotonic()
        for k, fr in enumerate(frames):
            ds.resize(k + 1, axis=0)
            ds[k] = fr
            if time.monotonic() - last >= 1.0:
                f.flush()
                last = time.monotonic()
    return len(frames) / (time.perf_counter() - t0)


def session_writer(path: Path, frames) -> float:
    """Frames/s for SessionWriter with one bias sample per frame (SWMR, flushed at least once a second)."""
    from insitu.core.records import BiasSample, FrameRecord
    from insitu.core.session import SessionWriter

    t0 = time.perf_counter()
    w = SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00", frame_shape=SHAPE, frame_dtype=np.uint16)
    for k, fr in enumerate(frames):
        t = k / RATE_HZ
        w.write(BiasSample(t, 1.0, 1.0, 1e-9, False))
        w.write(FrameRecord(t, fr, 1.0, 1e-9, False, 0.0, 1e-9))
    w.close()
    return len(frames) / (time.perf_counter() - t0)


def realtime(path: Path, frames) -> dict:
    """Paced 10 frames/s + 10 Hz bias: per-write latency and the lag behind schedule."""
    from insitu.core.records import BiasSample, FrameRecord
    from insitu.core.session import SessionWriter, open_session

    n = int(REALTIME_S * RATE_HZ)
    w = SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00")  # frames dataset made at the first frame
    lat = []
    t0 = time.monotonic()
    for k in range(n):
        due = t0 + k / RATE_HZ
        time.sleep(max(0.0, due - time.monotonic()))
        a = time.monotonic()
        w.write(BiasSample(a - t0, 1.0, 1.0, 1e-9, False))
        w.write(FrameRecord(a - t0, frames[k % len(frames)], 1.0, 1e-9, False, 0.0, 1e-9))
        lat.append(time.monotonic() - a)
    lag = time.monotonic() - (t0 + (n - 1) / RATE_HZ)
    w.close()
    with open_session(path) as s:
        ok = s.n_frames == n and len(s.bias["time"]) == n
    lat = np.array(lat[1:])  # the first write also creates the frames dataset
    return {"n": n, "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "max_ms": 1e3 * float(lat.max()), "end_lag_s": lag, "complete": ok}


def main() -> dict:
    frames = _frames(N_FRAMES)
    d = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    try:
        raw = raw_h5py(d / "raw.h5", frames)
        (d / "raw.h5").unlink()
        sw = session_writer(d / "sw.h5", frames)
        (d / "sw.h5").unlink()
        # second round, opposite order, to even out disk cache effects
        sw2 = session_writer(d / "sw2.h5", frames)
        (d / "sw2.h5").unlink()
        raw2 = raw_h5py(d / "raw2.h5", frames)
        (d / "raw2.h5").unlink()
        raw_fps, sw_fps = (raw + raw2) / 2, (sw + sw2) / 2
        mb = np.prod(SHAPE) * 2 / 1e6
        print(f"throughput, {N_FRAMES} frames of {SHAPE[0]}x{SHAPE[1]} uint16 ({mb:.1f} MB each):")
        print(f"  raw h5py       {raw_fps:7.1f} frames/s  ({raw_fps * mb:6.0f} MB/s)  runs {raw:.1f}, {raw2:.1f}")
        print(f"  SessionWriter  {sw_fps:7.1f} frames/s  ({sw_fps * mb:6.0f} MB/s)  runs {sw:.1f}, {sw2:.1f}")
        ratio = sw_fps / raw_fps
        print(f"  ratio SessionWriter / raw = {ratio:.2f}  (goal >= 0.8)  -> {'PASS' if ratio >= 0.8 else 'FAIL'}")
        rt = realtime(d / "rt.h5", frames)
        keeps_up = rt["complete"] and rt["p99_ms"] < 100.0 and rt["end_lag_s"] < 0.2
        print(f"real time, {RATE_HZ:g} frames/s + {RATE_HZ:g} Hz bias for {REALTIME_S:g} s: write latency "
              f"p50 {rt['p50_ms']:.1f} ms, p99 {rt['p99_ms']:.1f} ms, max {rt['max_ms']:.1f} ms; "
              f"lag at end {rt['end_lag_s'] * 1e3:.0f} ms; all {rt['n']} frames and samples on disk: "
              f"{rt['complete']}  -> {'keeps up' if keeps_up else 'FALLS BEHIND'}")
        return {"raw_fps": raw_fps, "session_fps": sw_fps, "ratio": ratio, "keeps_up": keeps_up, **rt}
    finally:
        for p in d.glob("*"):
            p.unlink()
        os.rmdir(d)


if __name__ == "__main__":
    main()
