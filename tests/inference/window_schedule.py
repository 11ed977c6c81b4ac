"""The test-time window schedule of STMN (Xiao & Lee Sec. 3.4 / 4), offline: the
reference that `stmn_tf.inference.video.WindowedVideoDetector`'s streamed schedule is
tested against (tests/inference/test_video.py).

A video's frames are split into `stride` interleaved sub-sequences (frames i, i + stride,
i + 2 * stride, ...), as at training time where clips sample 1 frame in 10; windows of
`window_length` (11) consecutive sub-sequence frames slide over each sub-sequence, and
every frame collects the detections of every window that covers it.

Window step: the paper only says "we slide the testing window and detect on all frames
within each sliding window". The authors' code (`ImageDetect:detect_VID_CENTER_OVERLAP`,
their default for STMN) slides by one frame: a window starts at every position of the
sub-sequence, and each frame concatenates the detections of all (up to 11) windows that
contain it. That is the default here (`step=1`). A larger step gives cheaper schedules;
`step=window_length` is non-overlapping windows. Whatever the step, the last window is
aligned with the end of the sub-sequence, so every frame is covered.

A sub-sequence shorter than the window (short videos, or the last sub-sequences of a
video whose length is not a multiple of the stride) is one window of its own, shorter
than `window_length` (the authors' code does the same).
"""


def subsequences(num_frames, stride=10):
    """The interleaved sub-sequences of a video.

    Args:
        num_frames: N, the video's length.
        stride: frame distance inside a sub-sequence. Defaults to 10.

    Returns:
        `min(stride, N)` lists of frame indices: `[i, i + stride, ...]` for each i.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return [list(range(start, num_frames, stride)) for start in range(min(stride, num_frames))]


def sliding_windows(indices, window_length=11, step=1):
    """Windows of `window_length` consecutive entries of `indices`.

    Args:
        indices: a sub-sequence (list of frame indices).
        window_length: T. Defaults to 11.
        step: entries between the starts of two windows. Defaults to 1 (the authors').

    Returns:
        List of windows (lists of frame indices), in order; the last one ends at the
        sub-sequence's end; `[indices]` when the sub-sequence is not longer than T;
        `[]` for an empty sub-sequence.
    """
    if window_length < 1:
        raise ValueError(f"window_length must be >= 1, got {window_length}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    indices = list(indices)
    n = len(indices)
    if n == 0:
        return []
    if n <= window_length:
        return [indices]
    starts = list(range(0, n - window_length + 1, step))
    if starts[-1] != n - window_length:
        starts.append(n - window_length)
    return [indices[s:s + window_length] for s in starts]


def video_windows(num_frames, window_length=11, stride=10, step=1):
    """All test windows of a video: `sliding_windows` over each of its `subsequences`.

    Args:
        num_frames: N.
        window_length: T. Defaults to 11.
        stride: sub-sequence stride. Defaults to 10.
        step: window step inside a sub-sequence. Defaults to 1.

    Returns:
        List of windows (lists of frame indices, increasing, `stride` apart), grouped by
        sub-sequence. Every frame 0..N-1 is in at least one window.

    Example:
        >>> video_windows(5, window_length=2, stride=2)
        [[0, 2], [2, 4], [1, 3]]
    """
    windows = []
    for sub in subsequences(num_frames, stride):
        windows.extend(sliding_windows(sub, window_length, step))
    return windows


def windows_per_frame(windows, num_frames):
    """For each frame, the (window index, position in the window) pairs that cover it.

    Returns:
        List of N lists of `(window, position)` tuples: where a frame's detections come
        from, to be concatenated.
    """
    covering = [[] for _ in range(num_frames)]
    for w, window in enumerate(windows):
        for position, frame in enumerate(window):
            covering[frame].append((w, position))
    return covering
