"""The benchmark and test peer of ``facekernels.me.region_flow_features``: BoostingVRME's released feature
extraction (``feature_extraction.py``: ``feature_extraction_spotting`` / ``flowProcess``), restated from its
behaviour, frame by frame and region by region, each region summarised by a Python loop over its pixels.

One change, the same one ``region_flow_features`` makes: the landmarks are given (``[T, 68, 2]``, a
non-finite frame = no face found) instead of detected with dlib, and the window's crop landmarks are the
reference frame's points mapped into the crop (the released code's path when dlib finds no face in the
crop). Needs OpenCV.
"""

from __future__ import annotations

import numpy as np

FARNEBACK = (0.5, 3, 15, 5, 7, 1.5, 0)


def loop_region_mean(cv2, flow: np.ndarray, percent: float):
    """Mean (dx, dy) of the pixels whose magnitude is in the top ``percent``, summed one by one."""
    if flow.size == 0:
        return 0, 0
    magnitude, _ = cv2.cartToPolar(flow[:, :, 0], flow[:, :, 1], angleInDegrees=True)
    magnitude = np.ravel(magnitude)
    dx = np.ravel(flow[:, :, 0])
    dy = np.ravel(flow[:, :, 1])
    order = np.argsort(magnitude)
    skip = int(len(magnitude) * (1 - percent))
    total_x = 0
    total_y = 0
    for position in range(skip, len(order)):
        pixel = order[position]
        total_x += dx[pixel]
        total_y += dy[pixel]
    return total_x / (len(order) - skip), total_y / (len(order) - skip)


def _extent(points, first, stop, pad):
    """(max x, min x, min y, max y) of points[first:stop], each pushed outwards by pad."""
    chosen = points[first:stop]
    return (int(chosen[:, 0].max()) + pad, int(chosen[:, 0].min()) - pad,
            int(chosen[:, 1].min()) - pad, int(chosen[:, 1].max()) + pad)


def _peer_window(cv2, video, points, found, start, k, size, align):
    series = [[[0, 0]] for _ in range(18)]
    ready = False
    for i in range(k):
        frame = start + i
        if not ready:
            if not found[frame]:
                if i == k - 1:
                    continue
                for s in series:
                    s.append([0, 0])
                continue
            lm = points[frame].copy()
            half = int((lm[42, 0] - lm[39, 0]) / 2)
            mid_x = int((lm[42, 0] + lm[39, 0]) / 2)
            mid_y = int((lm[42, 1] + lm[39, 1]) / 2)
            y0 = max(mid_y - int(3.5 * half), 0)
            y1 = mid_y + int(5.5 * half)
            x0 = max(mid_x - int(4.5 * half), 0)
            x1 = mid_x + int(4.5 * half)
            gray = cv2.resize(video[frame][y0:y1, x0:x1], (size, size))
            lm[:, 0] = (lm[:, 0] - x0) * (size / (x1 - x0))
            lm[:, 1] = (lm[:, 1] - y0) * (size / (y1 - y0))

            r1, l1, lo1, hi1 = _extent(lm, 17, 22, 0)
            spots1 = np.array([[lm[p, 1] - (lo1 - 15), lm[p, 0] - (l1 - 5)] for p in (20, 19, 18)])
            ref1 = gray[max(0, lo1 - 15):hi1 + 5, max(0, l1 - 5):r1]
            r3, l3, lo3, hi3 = _extent(lm, 22, 27, 0)
            spots3 = np.array([[lm[p, 1] - (lo3 - 15), lm[p, 0] - l3] for p in (23, 24, 25)])
            ref3 = gray[max(0, lo3 - 15):hi3 + 5, l3:r3]
            r4, l4, lo4, hi4 = _extent(lm, 48, 67, 0)
            spots4 = np.array([[lm[p, 1] - (lo4 - 15), lm[p, 0] - (l4 - 20)] for p in (48, 54, 51, 57, 62)])
            ref4 = gray[lo4 - 15:hi4 + 10, max(0, l4 - 20):r4 + 20]
            r5, l5, lo5, hi5 = _extent(lm, 30, 36, 0)
            spots5 = np.array([[lm[p, 1] - (lo5 - 20), lm[p, 0] - (l5 - 30)] for p in (31, 35)])
            ref5 = gray[lo5 - 20:hi5 + 5, max(0, l5 - 30):r5 + 30]
            r6, l6, lo6, hi6 = _extent(lm, 36, 42, 0)
            eye = (r6 - l6) / 2
            middle = (hi6 + lo6) / 2
            hi6, lo6, l6 = int(middle + 3 * eye / 2), int(middle + eye / 2), max(0, l6)
            ref6 = gray[lo6:hi6, l6:r6]
            r7, l7, lo7, hi7 = _extent(lm, 42, 48, 0)
            eye = (r7 - l7) / 2
            middle = (hi7 + lo7) / 2
            hi7, lo7, l7 = int(middle + 3 * eye / 2), int(middle + eye / 2), max(0, l7)
            ref7 = gray[lo7:hi7, l7:r7]
            r2, l2, lo2, hi2 = _extent(lm, 29, 31, 13)
            ref2 = gray[lo2:hi2, l2:r2]
            ready = True
            continue

        gray = cv2.resize(video[frame][y0:y1, x0:x1], (size, size))
        flow2 = cv2.calcOpticalFlowFarneback(ref2, gray[lo2:hi2, l2:r2], None, *FARNEBACK)
        head_x, head_y = loop_region_mean(cv2, flow2[15:-10, 5:-5, :], 0.7)
        if align:
            moves = 0
            while head_x ** 2 + head_y ** 2 > 1.0:
                moves += 1
                if moves > 3:
                    break
                x0 = max(x0 + int(round(head_x)), 0)
                y0 = max(y0 + int(round(head_y)), 0)
                x1 += int(round(head_x))
                y1 += int(round(head_y))
                gray = cv2.resize(video[frame][y0:y1, x0:x1], (size, size))
                flow2 = cv2.calcOpticalFlowFarneback(ref2, gray[lo2:hi2, l2:r2], None, *FARNEBACK)
                head_x, head_y = loop_region_mean(cv2, flow2[15:-10, 5:-5, :], 0.7)

        means = []
        flow = cv2.calcOpticalFlowFarneback(ref1, gray[max(0, lo1 - 15):hi1 + 5, max(0, l1 - 5):r1], None,
                                            *FARNEBACK)
        top = max(0, 10 + min(0, lo1 - 15))
        bottom = 4 if hi1 + 5 - max(0, lo1 - 15) - 3 < 10 + top else 10
        means.append(loop_region_mean(cv2, flow[top:-bottom, 10:-10, :], 0.3))
        for row, col in spots1:
            means.append(loop_region_mean(cv2, flow[row - 10:row + 10, col - 10:col + 10, :], 0.2))

        flow = cv2.calcOpticalFlowFarneback(ref3, gray[max(0, lo3 - 15):hi3 + 5, l3:r3], None, *FARNEBACK)
        top = max(0, 10 + min(0, lo3 - 15))
        means.append(loop_region_mean(cv2, flow[top:-10, 10:-10, :], 0.3))
        for row, col in spots3:
            means.append(loop_region_mean(cv2, flow[row - 10:row + 10, col - 10:col + 10, :], 0.3))

        flow = cv2.calcOpticalFlowFarneback(ref4, gray[lo4 - 15:hi4 + 10, max(0, l4 - 20):r4 + 20], None,
                                            *FARNEBACK)
        means.append(loop_region_mean(cv2, flow[10:-10, 10:-10, :], 0.3))
        (ra, ca), (rb, cb) = spots4[0], spots4[1]
        means.append(loop_region_mean(cv2, flow[ra - 10:ra + 10, ca - 10:ca + 20, :], 0.2))
        means.append(loop_region_mean(cv2, flow[rb - 10:rb + 10, cb - 20:cb + 10, :], 0.2))
        for row, col in spots4[2:]:
            means.append(loop_region_mean(cv2, flow[row - 10:row + 10, col - 10:col + 10, :], 0.2))

        flow = cv2.calcOpticalFlowFarneback(ref5, gray[lo5 - 20:hi5 + 5, max(0, l5 - 30):r5 + 30], None,
                                            *FARNEBACK)
        (ra, ca), (rb, cb) = spots5
        means.append(loop_region_mean(cv2, flow[ra - 20:ra + 5, ca - 20:ca + 10, :], 0.2))
        means.append(loop_region_mean(cv2, flow[rb - 20:rb + 5, cb - 10:cb + 20, :], 0.2))

        for ref, (lo, hi, le, ri) in ((ref6, (lo6, hi6, l6, r6)), (ref7, (lo7, hi7, l7, r7))):
            patch = gray[lo:hi, le:ri]
            if len(patch) == 0:
                means.append((0, 0))
            else:
                flow = cv2.calcOpticalFlowFarneback(ref, patch, None, *FARNEBACK)
                means.append(loop_region_mean(cv2, flow[5:-5, 5:-5, :], 0.3))

        for s, (mx, my) in zip(series, means):
            s.append([mx - head_x, my - head_y])
    return np.concatenate([np.array(s).transpose(1, 0) for s in series], axis=0)


def released_region_flow(video, landmarks, k: int, size: int = 320, align: bool = True) -> list[np.ndarray]:
    """The released extraction of one video: a list of ``[36, k]`` float64 arrays, one per window
    (windows start every ``k // 2`` frames, ``T // (k // 2) - 1`` of them)."""
    import cv2

    landmarks = np.asarray(landmarks)
    found = np.isfinite(landmarks).all(axis=(1, 2))
    points = np.zeros(landmarks.shape, np.int64)
    points[found] = np.rint(landmarks[found]).astype(np.int64)
    return [_peer_window(cv2, video, points, found, w * (k // 2), k, size, align)
            for w in range(len(video) // (k // 2) - 1)]
