"""Compiled kernels of the fast evaluator (numba; the GIL is released, so a thread pool uses every core).

``box_ious`` answers, for one 8-bit score map and every CAM threshold, the best IoU that the
protocol's single-contour box and its multi-contour boxes reach against the GT boxes, without
tracing a single contour. Why it is exact:

- The binary maps ``q > L`` are nested: lowering ``L`` only adds pixels. Pixels are added in
  decreasing grey level into a union-find with 8-connectivity (OpenCV's foreground connectivity),
  and after each threshold's level the live components are read off. An outer contour's bounding
  box is its component's bounding box.
- ``cv2.contourArea`` of an outer contour (the polygon through its border pixels' centres) is
  ``#full 2x2 cells + #three-pixel 2x2 cells / 2`` of the component with its holes filled; we keep
  the count for the component itself, exact when it has no holes, a lower bound otherwise.
- Holes (4-connected background components not reaching the border) are counted through the Euler
  number, updated per pixel from its 8 neighbours (Gray's bit quads): ``#holes = #components - Euler``.
- A hole's contour has the hole's bounding box grown by one pixel; the holes' boxes come from a
  second union-find over the background (4-connectivity) in increasing grey level, run only up
  to the highest level that has a hole.
- OpenCV lists a contour before the holes inside it, and a hole's contour never encloses more area
  than its parent's, so a hole never wins ``max(contours, key=cv2.contourArea)``; that choice is the
  component of largest (filled) area.

When the largest component is not certain (two components tied, or holes make the area bound
inconclusive), or a threshold with holes lies beyond the background pass (sparse high ones are
cheaper to trace than to extend the pass to), the threshold is flagged and the caller traces it
with ``cv2.findContours``. The property tests compare every threshold with the plain loop.

Indices into the work arrays are unsigned where it matters: numba then skips the negative-index
wrap-around check, which costs as much as the rest of the inner loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit

FLAG_SINGLE = 1  #: the single-contour answer at this threshold needs the plain findContours
FLAG_MULTI = 2   #: the multi-contour answer at this threshold needs the plain findContours
#: one plain findContours (with the Python around it) costs about as much as this many pixels of
#: the background pass (measured 4,000-10,000), so sparse high thresholds with holes are traced
#: rather than paid for with the whole pass
_TRACE_PIXELS = 8000

# Neighbour order of the 8-bit neighbourhood mask: bit i set when neighbour i is foreground.
#   0 1 2        (-1,-1) (-1,0) (-1,1)
#   3 . 4        ( 0,-1)   p    ( 0,1)
#   5 6 7        ( 1,-1) ( 1,0) ( 1,1)
_NDY = np.array([-1, -1, -1, 0, 0, 1, 1, 1], dtype=np.int64)
_NDX = np.array([-1, 0, 1, -1, 1, -1, 0, 1], dtype=np.int64)


def _neighbourhood_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per 8-neighbourhood mask: the change in (2 x contour area) and (4 x Euler number) when the
    centre pixel turns on, and the groups of mutually 8-adjacent foreground neighbours (one find
    per group is enough)."""
    area2 = {4: 2, 3: 1}  # per 2x2 cell: full cell = 1 pixel^2, three pixels = half
    euler4 = {1: 1, 3: -1}  # Q1 - Q3 - 2 QD (diagonal pairs below)

    def cell_area2(bits: tuple[int, int, int, int]) -> int:
        return area2.get(sum(bits), 0)

    def cell_euler4(bits: tuple[int, int, int, int]) -> int:
        if sum(bits) == 2 and bits[0] == bits[3]:  # TL and BR alike: a diagonal pair
            return -2
        return euler4.get(sum(bits), 0)

    d_area = np.zeros(256, dtype=np.int64)
    d_euler = np.zeros(256, dtype=np.int64)
    ngroups = np.zeros(256, dtype=np.int64)
    reps = np.zeros((256, 4), dtype=np.int64)
    for mask in range(256):
        on = [(mask >> i) & 1 for i in range(8)]
        n = {(int(_NDY[i]), int(_NDX[i])): on[i] for i in range(8)}
        for cy, cx in ((-1, -1), (-1, 0), (0, -1), (0, 0)):  # the four cells holding the centre
            cells = [(cy, cx), (cy, cx + 1), (cy + 1, cx), (cy + 1, cx + 1)]
            before = tuple(0 if c == (0, 0) else n[c] for c in cells)
            after = tuple(1 if c == (0, 0) else n[c] for c in cells)
            d_area[mask] += cell_area2(after) - cell_area2(before)
            d_euler[mask] += cell_euler4(after) - cell_euler4(before)
        seen: set[int] = set()
        for i in range(8):
            if not on[i] or i in seen:
                continue
            reps[mask, ngroups[mask]] = i
            ngroups[mask] += 1
            stack = [i]
            seen.add(i)
            while stack:
                j = stack.pop()
                for k in range(8):
                    if on[k] and k not in seen and max(abs(_NDY[j] - _NDY[k]), abs(_NDX[j] - _NDX[k])) == 1:
                        seen.add(k)
                        stack.append(k)
    return d_area, d_euler, ngroups, reps


_DAREA2, _DEULER4, _NGROUPS, _REPS = _neighbourhood_tables()


def _background_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbourhood background mask: the groups of background 4-neighbours (up 1, left 3,
    right 4, down 6) already 4-connected around the corner (up and left through up-left, ...)."""
    links = {(1, 3): 0, (1, 4): 2, (3, 6): 5, (4, 6): 7}  # pair of 4-neighbours -> their corner
    ngroups = np.zeros(256, dtype=np.int64)
    reps = np.zeros((256, 4), dtype=np.int64)
    for mask in range(256):
        on = [i for i in (1, 3, 4, 6) if (mask >> i) & 1]
        seen: set[int] = set()
        for i in on:
            if i in seen:
                continue
            reps[mask, ngroups[mask]] = i
            ngroups[mask] += 1
            stack = [i]
            seen.add(i)
            while stack:
                j = stack.pop()
                for k in on:
                    corner = links.get((min(j, k), max(j, k)))
                    if k not in seen and corner is not None and (mask >> corner) & 1:
                        seen.add(k)
                        stack.append(k)
    return ngroups, reps


_BG_NGROUPS, _BG_REPS = _background_tables()


_NONE = np.uint32(0xFFFFFFFF)  #: "not in the set" in a parent array


@njit(cache=True, nogil=True, inline="always")
def _find(parent, a):
    """Root of ``a``, with path halving when the path is longer than one step (most pixels point
    straight at their root: no store then). Indices are unsigned: numba then skips the
    negative-index wrap-around check, which costs as much as the rest of this loop."""
    r = np.uint64(parent[np.uint64(a)])
    if np.uint64(parent[r]) == r:
        return r
    a = r
    while np.uint64(parent[a]) != a:
        parent[a] = parent[parent[a]]
        a = np.uint64(parent[a])
    return a


@njit(cache=True, nogil=True, inline="always")
def _best_iou(x0, y0, x1, y1, gt):
    """Max over GT boxes of the protocol's IoU (inclusive pixels; a union <= 0 scores 0)."""
    best = 0.0
    area_a = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        union = area_a + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter
        iou = 0.0
        if union > 0:
            iou = inter / union
        best = max(best, iou)
    return best


@njit(cache=True, nogil=True)
def quantize(scoremap, q, hist):
    """``q = uint8(map * 255)`` (truncation, as numpy's cast), and the grey-level histogram (split
    four ways: ``hist [4, 256]``, summed by the caller). Returns the largest grey level, or -1
    (``q`` then unspecified) when a value is NaN, infinite or outside [0, 1]."""
    flat = scoremap.ravel()
    out = q.ravel()
    n = flat.shape[0]
    bad = False
    for i in range(n):
        v = flat[i]
        bad |= not (v >= 0.0 and v <= 1.0)  # NaN fails both comparisons
    if bad:
        return -1
    hist[:] = 0
    top = np.uint8(0)
    for i in range(0, n - 3, 4):
        for k in range(4):
            v = np.uint8(flat[i + k] * 255.0)
            out[i + k] = v
            hist[k, v] += 1
            top = max(top, v)
    for i in range(n - n % 4, n):
        v = np.uint8(flat[i] * 255.0)
        out[i] = v
        hist[0, v] += 1
        top = max(top, v)
    return np.int64(top)


@njit(cache=True, nogil=True)
def threshold_levels(top, thresholds):
    """``int(t * max(q))`` per threshold, as the protocol computes ``cv2.threshold``'s ``thresh``
    (float64 product, truncated)."""
    levels = np.empty(thresholds.shape[0], dtype=np.int64)
    for t in range(thresholds.shape[0]):
        levels[t] = np.int64(thresholds[t] * np.float64(top))
    return levels


@njit(cache=True, nogil=True)
def _band_order(q, hist, levels, order):
    """Pixels grouped by the threshold at which they turn foreground (counting sort), packed as
    ``(y << 16) | x``, and the groups' starts.

    Group ``b`` holds the pixels that enter the foreground at threshold index ``nt - 1 - b`` (the
    highest index whose level lies below the pixel's grey level); group ``nt`` holds those that
    never do. A pixel of group ``b`` turns background, going up, at threshold ``nt - b``.

    ``hist`` is the four-way grey-level histogram from :func:`quantize`; ``order`` a work buffer
    of ``h * w`` int32. Smooth maps put long runs of pixels in the same group, and a
    read-modify-write chain on one counter costs several cycles per pixel: hence the split
    histogram, and a fill pass that interleaves distant columns."""
    h, w = q.shape
    nt = levels.shape[0]
    band = np.empty(256, dtype=np.int64)
    t = nt - 1
    for v in range(255, -1, -1):
        while t >= 0 and levels[t] >= v:
            t -= 1
        band[v] = nt - 1 - t  # t = -1: never foreground -> group nt
    count = np.zeros(nt + 1, dtype=np.int64)
    for v in range(256):
        count[band[v]] += hist[0, v] + hist[1, v] + hist[2, v] + hist[3, v]
    start = np.empty(nt + 2, dtype=np.int64)
    acc = 0
    for b in range(nt + 1):
        start[b] = acc
        acc += count[b]
    start[nt + 1] = acc
    fill = start.copy()
    # four distant columns interleaved: consecutive writes rarely hit the same group, so the
    # read-modify-write chains on fill[] overlap instead of queueing; inside a group, each quarter
    # row stays in raster order
    w4 = w // 4
    for y in range(h):
        for x in range(w4):
            for k in range(4):
                xx = x + k * w4
                b = band[q[y, xx]]
                order[fill[b]] = (y << 16) | xx
                fill[b] += 1
        for xx in range(4 * w4, w):
            b = band[q[y, xx]]
            order[fill[b]] = (y << 16) | xx
            fill[b] += 1
    return start


@njit(cache=True, nogil=True)
def workspace(h, w):
    """Work buffers for maps of ``h x w``, allocated once per batch rather than per image (a few
    MB: reallocating them per image costs page faults when glibc returns them to the system)."""
    npad = (h + 2) * (w + 2)
    return (np.zeros(npad, dtype=np.uint8), np.empty(npad, dtype=np.uint32), np.empty(npad, dtype=np.uint8),
            np.empty((4, npad), dtype=np.int32), np.empty(npad, dtype=np.int64), np.empty(npad, dtype=np.int32),
            np.empty(npad, dtype=np.uint64), np.empty(h * w, dtype=np.int32))


@njit(cache=True, nogil=True)
def _foreground_pass(shape, order, start, gt, out_single, out_multi, flags, holes, ws, with_multi):
    """Top-down union-find over the foreground. Fills the single-contour IoU (or a flag), the best
    IoU over component boxes (when ``with_multi``), and the number of holes, per threshold."""
    h, w = shape
    nt = start.shape[0] - 2
    pw = w + 2
    upw = np.uint64(pw)
    one = np.uint64(1)
    offs = np.empty(8, dtype=np.uint64)
    for i in range(8):
        offs[i] = np.uint64(_NDY[i] * pw + _NDX[i])  # negative offsets wrap, and so does the sum

    # tri[p]: foreground bits of p's row window (p - 1, p, p + 1): the 8-neighbourhood is three loads
    tri, lab, rank, box, area2, pos, live, _ = ws  # lab: parent pointers, valid where foreground
    tri[:] = 0
    bx0 = box[0]
    by0 = box[1]
    bx1 = box[2]
    by1 = box[3]
    nlive = 0
    euler4 = 0
    empty_iou = _best_iou(0, 0, 0, 0, gt)
    # Consecutive pixels mostly join the same component: it is cached ("cur"), its area change
    # summed in a register, its box checked against registers (written through to the arrays).
    cur = np.uint64(0)  # padded index 0 is never a pixel
    pend_area = 0
    cx0 = cx1 = cy0 = cy1 = 0
    last_p = np.uint64(0)  # the previous pixel; its component is cur

    for b in range(nt):
        t = nt - 1 - b
        if b > 0 and start[b + 1] == start[b]:  # same binary map as the previous threshold
            out_single[t] = out_single[t + 1]
            out_multi[t] = out_multi[t + 1]
            flags[t] = flags[t + 1]
            holes[t] = holes[t + 1]
            continue
        for i in range(start[b], start[b + 1]):
            y = np.int64(order[i] >> 16)
            x = np.int64(order[i] & 0xFFFF)
            p = np.uint64((y + 1) * pw + x + 1)
            a = p - upw
            c = p + upw
            mid = np.int64(tri[p])
            mask = np.int64(tri[a]) | ((mid & 1) << 3) | ((mid & 4) << 2) | (np.int64(tri[c]) << 5)
            tri[p - one] |= 4
            tri[p] |= 2
            tri[p + one] |= 1
            euler4 += _DEULER4[mask]
            ng = _NGROUPS[mask]
            if ng == 1 and (mask & 8) != 0 and p - one == last_p:
                # one group holding the left neighbour, which was the previous pixel: no find, and
                # only the right edge of the box can move
                lab[p] = np.uint32(cur)
                if x > cx1:
                    cx1 = x
                    bx1[cur] = x
            elif ng == 0:
                area2[cur] += pend_area
                pend_area = 0
                cur = p
                lab[p] = np.uint32(p)
                rank[p] = 0
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                cx0 = cx1 = x
                cy0 = cy1 = y
                area2[p] = 0
                pos[p] = nlive
                live[nlive] = p
                nlive += 1
            else:
                r = _find(lab, p + offs[_REPS[mask, 0]])
                for g in range(1, ng):
                    rb = _find(lab, p + offs[_REPS[mask, g]])
                    if rb == r:
                        continue
                    if rank[r] < rank[rb]:
                        r, rb = rb, r
                    elif rank[r] == rank[rb]:
                        rank[r] += 1
                    if cur == rb or cur == r:  # the cache is about to go stale
                        area2[cur] += pend_area
                        pend_area = 0
                        cur = np.uint64(0)
                    lab[rb] = np.uint32(r)
                    bx0[r] = min(bx0[r], bx0[rb])
                    by0[r] = min(by0[r], by0[rb])
                    bx1[r] = max(bx1[r], bx1[rb])
                    by1[r] = max(by1[r], by1[rb])
                    area2[r] += area2[rb]
                    j = pos[rb]
                    last = live[nlive - 1]
                    live[j] = last
                    pos[last] = j
                    nlive -= 1
                lab[p] = np.uint32(r)
                if r != cur:
                    area2[cur] += pend_area
                    pend_area = 0
                    cur = r
                    cx0 = bx0[r]
                    cx1 = bx1[r]
                    cy0 = by0[r]
                    cy1 = by1[r]
                if x < cx0:
                    cx0 = x
                    bx0[r] = x
                elif x > cx1:
                    cx1 = x
                    bx1[r] = x
                if y < cy0:
                    cy0 = y
                    by0[r] = y
                elif y > cy1:
                    cy1 = y
                    by1[r] = y
            pend_area += _DAREA2[mask]
            last_p = p
        area2[cur] += pend_area
        pend_area = 0

        flags[t] = 0
        holes[t] = nlive - euler4 // 4
        if nlive == 0:
            out_single[t] = empty_iou
            out_multi[t] = empty_iou
            continue
        winner = live[0]
        for j in range(1, nlive):
            if area2[live[j]] > area2[winner]:
                winner = live[j]
        if with_multi:
            best_multi = 0.0
            for j in range(nlive):
                r = live[j]
                iou = _best_iou(bx0[r], by0[r], min(bx1[r] + 1, w - 1), min(by1[r] + 1, h - 1), gt)
                best_multi = max(best_multi, iou)
            out_multi[t] = best_multi
        if nlive > 1:
            runner_up = -1  # the largest area (bound) among the others
            for j in range(nlive):
                r = live[j]
                if r == winner:
                    continue
                bound = area2[r]
                if holes[t] > 0:  # filled area <= polygon through the bounding box's corner centres
                    bound = 2 * (bx1[r] - bx0[r]) * (by1[r] - by0[r])
                runner_up = max(runner_up, bound)
            if runner_up >= area2[winner]:
                flags[t] = FLAG_SINGLE
                out_single[t] = 0.0
                continue
        out_single[t] = _best_iou(bx0[winner], by0[winner], min(bx1[winner] + 1, w - 1),
                                  min(by1[winner] + 1, h - 1), gt)


@njit(cache=True, nogil=True)
def _background_pass(shape, order, start, gt, holes, hole_iou, t_max, ws):
    """Bottom-up union-find over the background (4-connectivity; the image frame is one outside
    component). Fills the best IoU over hole boxes at every threshold up to ``t_max`` that has
    holes."""
    h, w = shape
    nt = start.shape[0] - 2
    if t_max < 0:
        return
    pw = w + 2
    npad = (h + 2) * pw

    upw = np.uint64(pw)
    one = np.uint64(1)
    offs = np.empty(8, dtype=np.uint64)
    for i in range(8):
        offs[i] = np.uint64(_NDY[i] * pw + _NDX[i])
    # lab: parent pointers, valid where background; tri: background bits of each row window
    tri, lab, rank, box, _, pos, live, _ = ws
    tri[:] = 0
    bx0 = box[0]
    by0 = box[1]
    bx1 = box[2]
    by1 = box[3]
    # the frame: background, one component rooted at padded index 0, never a hole
    frame = np.empty(2 * pw + 2 * h, dtype=np.int64)
    for x in range(pw):
        frame[x] = x
        frame[pw + x] = (h + 1) * pw + x
    for y in range(h):
        frame[2 * pw + y] = (y + 1) * pw
        frame[2 * pw + h + y] = (y + 1) * pw + w + 1
    for f in frame:
        lab[f] = 0
        if f > 0:
            tri[f - 1] |= 4
        tri[f] |= 2
        if f + 1 < npad:
            tri[f + 1] |= 1
    rank[0] = 255
    pos[0] = 0
    live[0] = 0
    nlive = 1
    cur = np.uint64(0)  # the cached component (0 = the frame: its box is never read)
    cx0 = cx1 = cy0 = cy1 = 0
    last_p = np.uint64(0)

    for t in range(t_max + 1):
        b = nt - t  # the group that turns background at threshold t
        for i in range(start[b], start[b + 1]):
            y = np.int64(order[i] >> 16)
            x = np.int64(order[i] & 0xFFFF)
            p = np.uint64((y + 1) * pw + x + 1)
            mid = np.int64(tri[p])
            mask = (np.int64(tri[p - upw]) | ((mid & 1) << 3) | ((mid & 4) << 2)
                    | (np.int64(tri[p + upw]) << 5))
            tri[p - one] |= 4
            tri[p] |= 2
            tri[p + one] |= 1
            ng = _BG_NGROUPS[mask]
            if ng == 1 and (mask & 8) != 0 and p - one == last_p:
                lab[p] = np.uint32(cur)
                if x > cx1:
                    cx1 = x
                    bx1[cur] = x
                last_p = p
                continue
            if ng == 0:
                r = p
                lab[p] = np.uint32(p)
                rank[p] = 0
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                pos[p] = nlive
                live[nlive] = p
                nlive += 1
            else:
                r = _find(lab, p + offs[_BG_REPS[mask, 0]])
                for g in range(1, ng):
                    rb = _find(lab, p + offs[_BG_REPS[mask, g]])
                    if rb == r:
                        continue
                    if rank[r] < rank[rb]:
                        r, rb = rb, r
                    elif rank[r] == rank[rb]:
                        rank[r] += 1
                    if cur == rb or cur == r:
                        cur = np.uint64(p)  # stale: reload below (p is not a root yet)
                    lab[rb] = np.uint32(r)
                    bx0[r] = min(bx0[r], bx0[rb])
                    by0[r] = min(by0[r], by0[rb])
                    bx1[r] = max(bx1[r], bx1[rb])
                    by1[r] = max(by1[r], by1[rb])
                    j = pos[rb]
                    last = live[nlive - 1]
                    live[j] = last
                    pos[last] = j
                    nlive -= 1
                lab[p] = np.uint32(r)
            if r != cur:
                cur = r
                cx0 = bx0[r]
                cx1 = bx1[r]
                cy0 = by0[r]
                cy1 = by1[r]
            if x < cx0:
                cx0 = x
                bx0[r] = x
            elif x > cx1:
                cx1 = x
                bx1[r] = x
            if y < cy0:
                cy0 = y
                by0[r] = y
            elif y > cy1:
                cy1 = y
                by1[r] = y
            last_p = p
        if holes[t] > 0:
            outside = _find(lab, 0)
            best = 0.0
            for j in range(nlive):
                r = live[j]
                if r == outside:
                    continue
                iou = _best_iou(bx0[r] - 1, by0[r] - 1, min(bx1[r] + 2, w - 1), min(by1[r] + 2, h - 1), gt)
                best = max(best, iou)
            hole_iou[t] = best


@njit(cache=True, nogil=True)
def _background_extent(levels, start, holes):
    """Highest threshold index the background pass should reach: beyond it, thresholds with holes
    are cheaper to trace one by one than to extend the pass (-1: no pass)."""
    nt = levels.shape[0]
    traced = 0  # distinct levels with holes above the candidate cut
    last_level = -1
    for t in range(nt - 1, -1, -1):
        if holes[t] > 0 and levels[t] != last_level:
            traced += 1
            last_level = levels[t]
    best_t = -1
    best_cost = traced * _TRACE_PIXELS
    last_level = -1
    total = start[nt + 1]
    for t in range(nt):
        if holes[t] > 0 and levels[t] != last_level:
            traced -= 1
            last_level = levels[t]
            background = total - start[nt - t]  # pixels of groups nt - t .. nt
            cost = background + traced * _TRACE_PIXELS
            if cost < best_cost:
                best_cost = cost
                best_t = t
    return best_t


@njit(cache=True, nogil=True)
def box_ious(q, hist, top, thresholds, gt, out_single, out_multi, flags, with_holes, ws):
    """Best IoU per threshold of the single-contour box (``out_single``) and of all contour boxes
    (``out_multi``, only computed ``with_holes``, the multi-contour mode) for the uint8 map ``q`` whose
    largest value is ``top``. Where ``flags`` has FLAG_SINGLE or FLAG_MULTI, the caller must trace
    that threshold. Returns the thresholds' grey levels."""
    levels = threshold_levels(top, thresholds)
    nt = levels.shape[0]
    order = ws[7]
    start = _band_order(q, hist, levels, order)
    holes = np.zeros(nt, dtype=np.int64)
    _foreground_pass(q.shape, order, start, gt, out_single, out_multi, flags, holes, ws, with_holes)
    if with_holes:
        t_cut = _background_extent(levels, start, holes)
        hole_iou = np.zeros(nt, dtype=np.float64)
        _background_pass(q.shape, order, start, gt, holes, hole_iou, t_cut, ws)
        for t in range(nt):
            if holes[t] == 0:
                continue
            if t > t_cut:
                flags[t] |= FLAG_MULTI
            elif hole_iou[t] > out_multi[t]:
                out_multi[t] = hole_iou[t]
    return levels


@njit(cache=True, nogil=True)
def batch_box_ious(maps, thresholds, gt_boxes, gt_offsets, first, stop, out_single, out_multi, flags,
                   levels, valid, with_holes):
    """``box_ious`` for images ``first .. stop - 1`` of ``maps [B, H, W]`` (float64); the GT boxes
    of image ``i`` are ``gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]``. ``valid[i]`` is False for a map
    with a value outside [0, 1] (its rows are left untouched)."""
    h = maps.shape[1]
    w = maps.shape[2]
    q = np.empty((h, w), dtype=np.uint8)
    hist = np.empty((4, 256), dtype=np.int64)
    ws = workspace(h, w)
    for i in range(first, stop):
        top = quantize(maps[i], q, hist)
        valid[i] = top >= 0
        if top < 0:
            continue
        gt = gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]
        levels[i] = box_ious(q, hist, top, thresholds, gt, out_single[i], out_multi[i], flags[i], with_holes, ws)


@njit(cache=True, nogil=True)
def mask_histograms(scoremap, mask, edges, fg_hist, bg_hist):
    """Add the scores of foreground (mask == 1) and background (mask == 0) pixels to histograms
    over ``edges`` (bins ``[e_i, e_i+1)``, the last one closed, as ``np.histogram``); ignored
    pixels (any other value) count nowhere. Scores must lie in [edges[0], edges[-1]]."""
    nb = edges.shape[0] - 1
    step = (edges[nb - 2] - edges[0]) / max(nb - 2, 1) if nb > 2 else 1.0
    flat = scoremap.ravel()
    labels = mask.ravel()
    for i in range(flat.shape[0]):
        m = labels[i]
        if m > 1:
            continue
        v = flat[i]
        b = int((v - edges[0]) / step) if step > 0 else 0
        b = min(max(b, 0), nb - 1)
        while b > 0 and edges[b] > v:
            b -= 1
        while b < nb - 1 and edges[b + 1] <= v:
            b += 1
        if m == 1:
            fg_hist[b] += 1
        else:
            bg_hist[b] += 1
