r"""Landmark graphs for spatio-temporal graph convolution: the dlib 68-point face and its 20-point lips, the
MediaPipe Face Mesh (468 points, 478 with the irises), Pose (33), Hand (21) and Holistic (543) landmark
sets, and OpenPose's BODY_25 and COCO-18 skeletons; their ST-GCN partition matrices, sub-graphs and
pictures.

A graph is an undirected edge list over V nodes (no self-loops) with a centre node. :func:`adjacency`
turns it into the ``[K, V, V]`` partition matrices an ST-GCN layer (:func:`facekernels.ops.st_graph_conv`,
:class:`facekernels.nn.STGCNBlock`) aggregates with, ``out[w] = sum_k sum_v A[k, v, w] f_k(x)[v]``: row v is
the neighbour a message comes from, column w the node it goes to (the root).

Partition strategies (ST-GCN, Yan et al. 2018, "Partition Strategies"), over the hops
``0, dilation, 2*dilation, ... <= max_hop``:

- ``uniform``: K = 1, every node within the hops in one matrix;
- ``distance``: one matrix per hop (hop 0 is the node itself);
- ``spatial``: hop 0 is the root itself; each further hop splits into the *centripetal* neighbours (closer
  to the centre node than the root) and the *centrifugal* ones (the rest: as far as or farther than the
  root). K = 1 + 2 * (number of hops > 0); with max_hop = 1: [root, centripetal, centrifugal].

Normalisation as ST-GCN's ``normalize_digraph``: with M the 0/1 matrix of node pairs within the hops
(self-loops included), ``M_norm = M D^-1``, D the diagonal of M's column sums, so every column sums to 1
(each node averages over its neighbourhood); each partition matrix keeps the entries of ``M_norm`` for
its pairs, and the K matrices sum to ``M_norm``.

One deliberate difference from yysijie/st-gcn's code: its spatial partition compares hop distances to
the centre that are truncated at ``max_hop`` (farther nodes all read as infinitely far and land in the
root group of every hop); here the distances to the centre are the true graph distances, as the paper
defines the groups. For ``spatial``, ST-GCN's code also stores the two groups of a hop in the other order
(centrifugal, then centripetal).

The MediaPipe edge lists below (the face mesh tesselation, the face regions, the iris, pose and hand
connections) are MediaPipe's published connection sets (google/mediapipe, Apache-2.0), as its ``mediapipe``
package lists them (``mediapipe.tasks.python.vision.FaceLandmarksConnections``, ``PoseLandmarksConnections``,
``HandLandmarksConnections``), recorded here in our own encoding; ``tests/test_graphs.py`` compares them
with the package when it is installed. Where a published set leaves a landmark set in pieces, the graph
adds the few links listed next to it (``POSE_LINKS``, ``IRIS_LINKS``, ``HOLISTIC_LINKS``,
``MEDIAPIPE_LIP_LINKS``), so that every graph here is connected; docs/landmarks.md gives the reasons.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "BODY25",
    "COCO18",
    "FACE68",
    "GRAPHS",
    "HOLISTIC_LINKS",
    "HOLISTIC_PARTS",
    "IRIS_LINKS",
    "LIPS20",
    "MEDIAPIPE_FACE_MESH",
    "MEDIAPIPE_FACE_MESH_IRIS",
    "MEDIAPIPE_FACE_MESH_TRIANGLES",
    "MEDIAPIPE_FACE_REGIONS",
    "MEDIAPIPE_HAND",
    "MEDIAPIPE_HAND_CONNECTIONS",
    "MEDIAPIPE_HOLISTIC",
    "MEDIAPIPE_IRIS_CONNECTIONS",
    "MEDIAPIPE_LIPS",
    "MEDIAPIPE_LIP_LINKS",
    "MEDIAPIPE_POSE",
    "MEDIAPIPE_POSE_CONNECTIONS",
    "POSE_LINKS",
    "STRATEGIES",
    "LandmarkGraph",
    "adjacency",
    "edges",
    "get_graph",
    "hop_distance",
    "normalize_digraph",
    "plot",
    "region",
    "subgraph",
]

STRATEGIES = ("uniform", "distance", "spatial")


@dataclass(frozen=True)
class LandmarkGraph:
    """An undirected landmark graph.

    Attributes:
        name: the graph's name (``"face68"``, ``"mediapipe_face_mesh"``, ...).
        num_nodes: V.
        edges: undirected edges ``(i, j)`` with ``i < j``, no self-loops, no duplicates.
        center: the default centre node of the ``spatial`` partition.
        landmarks: the source index of each node: where node v's coordinates sit in the landmark array the
            detector emits (the dlib 68-point index for face68 and lips20, the MediaPipe or OpenPose index
            for theirs, the row of the 543-row Holistic layout for mediapipe_holistic). A sub-graph keeps
            the source indices of the nodes it takes. Default: ``0 .. V-1``.
        regions: named node sets ``((name, (node, ...)), ...)`` in this graph's numbering, for
            :func:`subgraph` (``"lips"``, ``"left_eye"``, ``"upper_body"``, ...).
    """

    name: str
    num_nodes: int
    edges: tuple[tuple[int, int], ...]
    center: int
    landmarks: tuple[int, ...] = ()
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        v = self.num_nodes
        bad = [e for e in self.edges if len(e) != 2 or not (0 <= e[0] < v and 0 <= e[1] < v) or e[0] == e[1]]
        if v < 1 or bad:
            raise ValueError(
                f"LandmarkGraph: edges must join two different nodes in [0, {v}), got {bad[:3]}"
                if bad else f"LandmarkGraph: num_nodes must be >= 1, got {v}"
            )
        if not 0 <= self.center < v:
            raise ValueError(f"LandmarkGraph: center must be in [0, {v}), got {self.center}")
        if not self.landmarks:
            object.__setattr__(self, "landmarks", tuple(range(v)))
        if len(self.landmarks) != v:
            raise ValueError(f"LandmarkGraph: landmarks must give one index per node ({v}), got {len(self.landmarks)}")
        for name, nodes in self.regions:
            if not nodes or any(not 0 <= n < v for n in nodes):
                raise ValueError(f"LandmarkGraph: region {name!r} must list nodes in [0, {v}), got {nodes[:5]}")

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.regions)

    def region(self, name: str) -> tuple[int, ...]:
        """The nodes of the named region, in this graph's numbering."""
        for key, nodes in self.regions:
            if key == name:
                return nodes
        raise ValueError(f"graphs: graph {self.name!r} has no region {name!r}; its regions: {self.region_names}")


def _chain(first: int, last: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(first, last)]


def _ring(first: int, last: int) -> list[tuple[int, int]]:
    return [*_chain(first, last), (first, last)]


def _path(*nodes: int) -> list[tuple[int, int]]:
    return list(itertools.pairwise(nodes))


def _normalise_edges(pairs) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(min(i, j), max(i, j)) for i, j in pairs}))


def _triples(text: str) -> tuple[tuple[int, int, int], ...]:
    numbers = [int(n) for n in text.split()]
    return tuple(zip(numbers[0::3], numbers[1::3], numbers[2::3]))


# ---- dlib 68 points ----------------------------------------------------------------------------------

# The dlib 68-point contours (0-based): jaw 0-16, right and left brows 17-21 and 22-26 (subject's right
# first), nose bridge 27-30 (30 is the nose tip), lower nose 31-35, eyes 36-41 and 42-47 (rings), outer
# lip 48-59 and inner lip 60-67 (rings; 48 and 54 are the mouth corners, 51 and 57 the outer midpoints,
# 62 and 66 the inner ones).
_FACE68_CONTOURS = [
    *_chain(0, 16),
    *_chain(17, 21),
    *_chain(22, 26),
    *_chain(27, 30),
    *_chain(31, 35),
    *_ring(36, 41),
    *_ring(42, 47),
    *_ring(48, 59),
    *_ring(60, 67),
]

# The links between contours that make one connected face; the lip links are the lips20 graph's too.
_LIP_LINKS = [
    (48, 60), (54, 64),  # mouth corners: outer to inner ring
    (51, 62), (57, 66),  # upper and lower midpoints: outer to inner ring
]
_FACE68_LINKS = [
    (0, 17), (16, 26),   # jaw ends to the outer brow ends
    (21, 27), (22, 27),  # inner brow ends to the top of the nose bridge
    (27, 39), (27, 42),  # inner eye corners to the top of the nose bridge
    (30, 33),            # nose tip to the middle of the lower nose
    (33, 51),            # lower nose to the upper lip
    (8, 57),             # chin to the lower lip
    *_LIP_LINKS,
]

_FACE68_REGIONS = (
    ("jaw", tuple(range(17))),
    ("right_eyebrow", tuple(range(17, 22))),
    ("left_eyebrow", tuple(range(22, 27))),
    ("nose", tuple(range(27, 36))),
    ("right_eye", tuple(range(36, 42))),
    ("left_eye", tuple(range(42, 48))),
    ("lips", tuple(range(48, 68))),
)

# ---- MediaPipe Face Mesh -------------------------------------------------------------------------------

# MediaPipe's tesselation connection set (FACE_LANDMARKS_TESSELATION) lists 2556 directed connections:
# the three edges of each of 852 triangles in turn, so every inner edge twice. Recorded here as those
# triangles, in MediaPipe's order (three landmarks each, eight triangles a line); their undirected edges,
# 1322 of them over all 468 landmarks, are the face mesh graph's.
MEDIAPIPE_FACE_MESH_TRIANGLES: tuple[tuple[int, int, int], ...] = _triples("""
    127 34 139 11 0 37 232 231 120 72 37 39 128 121 47 232 121 128 104 69 67 175 171 148
    118 50 101 73 39 40 9 151 108 48 115 131 194 204 211 74 40 185 80 42 183 40 92 186
    230 229 118 202 212 214 83 18 17 76 61 146 160 29 30 56 157 173 106 204 194 135 214 192
    203 165 98 21 71 68 51 45 4 144 24 23 77 146 91 205 50 187 201 200 18 91 106 182
    90 91 181 85 84 17 206 203 36 148 171 140 92 40 39 193 189 244 159 158 28 247 246 161
    236 3 196 54 68 104 193 168 8 117 228 31 189 193 55 98 97 99 126 47 100 166 79 218
    155 154 26 209 49 131 135 136 150 47 126 217 223 52 53 45 51 134 211 170 140 67 69 108
    43 106 91 230 119 120 226 130 247 63 53 52 238 20 242 46 70 156 78 62 96 46 53 63
    143 34 227 123 117 111 44 125 19 236 134 51 216 206 205 154 153 22 39 37 167 200 201 208
    36 142 100 57 212 202 20 60 99 28 158 157 35 226 113 160 159 27 204 202 210 113 225 46
    43 202 204 62 76 77 137 123 116 41 38 72 203 129 142 64 98 240 49 102 64 41 73 74
    212 216 207 42 74 184 169 170 211 170 149 176 105 66 69 122 6 168 123 147 187 96 77 90
    65 55 107 89 90 180 101 100 120 63 105 104 93 137 227 15 86 85 129 102 49 14 87 86
    55 8 9 100 47 121 145 23 22 88 89 179 6 122 196 88 95 96 138 172 136 215 58 172
    115 48 219 42 80 81 195 3 51 43 146 61 171 175 199 81 82 38 53 46 225 144 163 110
    52 65 66 229 228 117 34 127 234 107 108 69 109 108 151 48 64 235 62 78 191 129 209 126
    111 35 143 117 123 50 222 65 52 19 125 141 221 55 65 3 195 197 25 7 33 220 237 44
    70 71 139 122 193 245 247 130 33 71 21 162 170 169 150 188 174 196 216 186 92 2 97 167
    141 125 241 164 167 37 72 38 12 38 82 13 63 68 71 226 35 111 101 50 205 206 92 165
    209 198 217 165 167 97 220 115 218 133 112 243 239 238 241 214 135 169 190 173 133 171 208 32
    125 44 237 86 87 178 85 86 179 84 85 180 83 84 181 201 83 182 137 93 132 76 62 183
    61 76 184 57 61 185 212 57 186 214 207 187 34 143 156 79 239 237 123 137 177 44 1 4
    201 194 32 64 102 129 213 215 138 59 166 219 242 99 97 2 94 141 75 59 235 24 110 228
    25 130 226 23 24 229 22 23 230 26 22 231 112 26 232 189 190 243 221 56 190 28 56 221
    27 28 222 29 27 223 30 29 224 247 30 225 238 79 20 166 59 75 60 75 240 147 177 215
    20 79 166 187 147 213 112 233 244 233 128 245 128 114 188 114 217 174 131 115 220 217 198 236
    198 131 134 177 132 58 143 35 124 110 163 7 228 110 25 356 389 368 11 302 267 452 350 349
    302 303 269 357 343 277 452 453 357 333 332 297 175 152 377 347 348 330 303 304 270 9 336 337
    278 279 360 418 262 431 304 408 409 310 415 407 270 409 410 450 348 347 422 430 434 313 314 17
    306 307 375 387 388 260 286 414 398 335 406 418 364 367 416 423 358 327 251 284 298 281 5 4
    373 374 253 307 320 321 425 427 411 421 313 18 321 405 406 320 404 405 315 16 17 426 425 266
    377 400 369 322 391 269 417 465 464 386 257 258 466 260 388 456 399 419 284 332 333 417 285 8
    346 340 261 413 441 285 327 460 328 355 371 329 392 439 438 382 341 256 429 420 360 364 394 379
    277 343 437 443 444 283 275 440 363 431 262 369 297 338 337 273 375 321 450 451 349 446 342 467
    293 334 282 458 461 462 276 353 383 308 324 325 276 300 293 372 345 447 352 345 340 274 1 19
    456 248 281 436 427 425 381 256 252 269 391 393 200 199 428 266 330 329 287 273 422 250 462 328
    258 286 384 265 353 342 387 259 257 424 431 430 342 353 276 273 335 424 292 325 307 366 447 345
    271 303 302 423 266 371 294 455 460 279 278 294 271 272 304 432 434 427 272 407 408 394 430 431
    395 369 400 334 333 299 351 417 168 352 280 411 325 319 320 295 296 336 319 403 404 330 348 349
    293 298 333 323 454 447 15 16 315 358 429 279 14 15 316 285 336 9 329 349 350 374 380 252
    318 402 403 6 197 419 318 319 325 367 364 365 435 367 397 344 438 439 272 271 311 195 5 281
    273 287 291 396 428 199 311 271 268 283 444 445 373 254 339 282 334 296 449 347 346 264 447 454
    336 296 299 338 10 151 278 439 455 292 407 415 358 371 355 340 345 372 346 347 280 442 443 282
    19 94 370 441 442 295 248 419 197 263 255 359 440 275 274 300 383 368 351 412 465 263 467 466
    301 368 389 395 378 379 412 351 419 436 426 322 2 164 393 370 462 461 164 0 267 302 11 12
    268 12 13 293 300 301 446 261 340 330 266 425 426 423 391 429 355 437 391 327 326 440 457 438
    341 382 362 459 457 461 434 430 394 414 463 362 396 369 262 354 461 457 316 403 402 315 404 403
    314 405 404 313 406 405 421 418 406 366 401 361 306 408 407 291 409 408 287 410 409 432 436 410
    434 416 411 264 368 383 309 438 457 352 376 401 274 275 4 421 428 262 294 327 358 433 416 367
    289 455 439 462 370 326 2 326 370 305 460 455 254 449 448 255 261 446 253 450 449 252 451 450
    256 452 451 341 453 452 413 464 463 441 413 414 258 442 441 257 443 442 259 444 443 260 445 444
    467 342 445 459 458 250 289 392 290 290 328 460 376 433 435 250 290 392 411 416 433 341 463 464
    453 464 465 357 465 412 343 412 399 360 363 440 437 399 456 420 456 363 401 435 288 372 383 353
    339 255 249 448 261 255 133 243 190 133 155 112 33 246 247 33 130 25 398 384 286 362 398 414
    362 463 341 263 359 467 263 249 255 466 467 260 75 60 166 238 239 79 162 127 139 72 11 37
    121 232 120 73 72 39 114 128 47 233 232 128 103 104 67 152 175 148 119 118 101 74 73 40
    107 9 108 49 48 131 32 194 211 184 74 185 191 80 183 185 40 186 119 230 118 210 202 214
    84 83 17 77 76 146 161 160 30 190 56 173 182 106 194 138 135 192 129 203 98 54 21 68
    5 51 4 145 144 23 90 77 91 207 205 187 83 201 18 181 91 182 180 90 181 16 85 17
    205 206 36 176 148 140 165 92 39 245 193 244 27 159 28 30 247 161 174 236 196 103 54 104
    55 193 8 111 117 31 221 189 55 240 98 99 142 126 100 219 166 218 112 155 26 198 209 131
    169 135 150 114 47 217 224 223 53 220 45 134 32 211 140 109 67 108 146 43 91 231 230 120
    113 226 247 105 63 52 241 238 242 124 46 156 95 78 96 70 46 63 116 143 227 116 123 111
    1 44 19 3 236 51 207 216 205 26 154 22 165 39 167 199 200 208 101 36 100 43 57 202
    242 20 99 56 28 157 124 35 113 29 160 27 211 204 210 124 113 46 106 43 204 96 62 77
    227 137 116 73 41 72 36 203 142 235 64 240 48 49 64 42 41 74 214 212 207 183 42 184
    210 169 211 140 170 176 104 105 69 193 122 168 50 123 187 89 96 90 66 65 107 179 89 180
    119 101 120 68 63 104 234 93 227 16 15 85 209 129 49 15 14 86 107 55 9 120 100 121
    153 145 22 178 88 179 197 6 196 89 88 96 135 138 136 138 215 172 218 115 219 41 42 81
    5 195 51 57 43 61 208 171 199 41 81 38 224 53 225 24 144 110 105 52 66 118 229 117
    227 34 234 66 107 69 10 109 151 219 48 235 183 62 191 142 129 126 116 111 143 118 117 50
    223 222 52 94 19 141 222 221 65 196 3 197 45 220 44 156 70 139 188 122 245 139 71 162
    149 170 150 122 188 196 206 216 92 164 2 167 242 141 241 0 164 37 11 72 12 12 38 13
    70 63 71 31 226 111 36 101 205 203 206 165 126 209 217 98 165 97 237 220 218 237 239 241
    210 214 169 140 171 32 241 125 237 179 86 178 180 85 179 181 84 180 182 83 181 194 201 182
    177 137 132 184 76 183 185 61 184 186 57 185 216 212 186 192 214 187 139 34 156 218 79 237
    147 123 177 45 44 4 208 201 32 98 64 129 192 213 138 235 59 219 141 242 97 97 2 141
    240 75 235 229 24 228 31 25 226 230 23 229 231 22 230 232 26 231 233 112 232 244 189 243
    189 221 190 222 28 221 223 27 222 224 29 223 225 30 224 113 247 225 99 60 240 213 147 215
    60 20 166 192 187 213 243 112 244 244 233 245 245 128 188 188 114 174 134 131 220 174 217 236
    236 198 134 215 177 58 156 143 124 25 110 7 31 228 25 264 356 368 0 11 267 451 452 349
    267 302 269 350 357 277 350 452 357 299 333 297 396 175 377 280 347 330 269 303 270 151 9 337
    344 278 360 424 418 431 270 304 409 272 310 407 322 270 410 449 450 347 432 422 434 18 313 17
    291 306 375 259 387 260 424 335 418 434 364 416 391 423 327 301 251 298 275 281 4 254 373 253
    375 307 321 280 425 411 200 421 18 335 321 406 321 320 405 314 315 17 423 426 266 396 377 369
    270 322 269 413 417 464 385 386 258 248 456 419 298 284 333 168 417 8 448 346 261 417 413 285
    326 327 328 277 355 329 309 392 438 381 382 256 279 429 360 365 364 379 355 277 437 282 443 283
    281 275 363 395 431 369 299 297 337 335 273 321 348 450 349 359 446 467 283 293 282 250 458 462
    300 276 383 292 308 325 283 276 293 264 372 447 346 352 340 354 274 19 363 456 281 426 436 425
    380 381 252 267 269 393 421 200 428 371 266 329 432 287 422 290 250 328 385 258 384 446 265 342
    386 387 257 422 424 430 445 342 276 422 273 424 306 292 307 352 366 345 268 271 302 358 423 371
    327 294 460 331 279 294 303 271 304 436 432 427 304 272 408 395 394 431 378 395 400 296 334 299
    6 351 168 376 352 411 307 325 320 285 295 336 320 319 404 329 330 349 334 293 333 366 323 447
    316 15 315 331 358 279 317 14 316 8 285 9 277 329 350 253 374 252 319 318 403 351 6 419
    324 318 325 397 367 365 288 435 397 278 344 439 310 272 311 248 195 281 375 273 291 175 396 199
    312 311 268 276 283 445 390 373 339 295 282 296 448 449 346 356 264 454 337 336 299 337 338 151
    294 278 455 308 292 415 429 358 355 265 340 372 352 346 280 295 442 282 354 19 370 285 441 295
    195 248 197 457 440 274 301 300 368 417 351 465 251 301 389 394 395 379 399 412 419 410 436 322
    326 2 393 354 370 461 393 164 267 268 302 12 312 268 13 298 293 301 265 446 340 280 330 425
    322 426 391 420 429 437 393 391 326 344 440 438 458 459 461 364 434 394 428 396 262 274 354 457
    317 316 402 316 315 403 315 314 404 314 313 405 313 421 406 323 366 361 292 306 407 306 291 408
    291 287 409 287 432 410 427 434 411 372 264 383 459 309 457 366 352 401 1 274 4 418 421 262
    331 294 358 435 433 367 392 289 439 328 462 326 94 2 370 289 305 455 339 254 448 359 255 446
    254 253 449 253 252 450 252 256 451 256 341 452 414 413 463 286 441 414 286 258 441 258 257 442
    257 259 443 259 260 444 260 467 445 309 459 250 305 289 290 305 290 460 401 376 435 309 250 392
    376 411 433 453 341 464 357 453 465 343 357 412 437 343 399 344 360 440 420 437 456 360 420 363
    361 401 288 265 372 353 390 339 249 339 448 255
""")

# The nodes of MediaPipe's named face connection sets (FACE_LANDMARKS_LIPS, _LEFT_EYE, ...), in the order
# they first appear in the package's lists; "left" is the subject's left, as in MediaPipe. The lips are
# the outer lower lip (61 .. 291, the mouth corners), the outer upper lip (185 .. 409), then the inner lower
# (78 .. 308, the inner corners) and inner upper (191 .. 415) lips; 0, 17, 13 and 14 are the outer upper,
# outer lower, inner upper and inner lower midpoints. Each set's connections are edges of the
# tesselation, and for all but the eyebrows they are all the tesselation's edges among its nodes.
MEDIAPIPE_FACE_REGIONS: dict[str, tuple[int, ...]] = {
    "lips": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
             78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415),
    "left_eye": (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398),
    "right_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173),
    "left_eyebrow": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "right_eyebrow": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107),
    "face_oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    "nose": (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115,
             48, 64),
}

# The iris model's ten points (478-landmark face mesh): 468 is the centre of the right iris and 469-472 its
# rim, 473 the centre of the left one and 474-477 its rim. MediaPipe's iris connection sets are the two rims.
MEDIAPIPE_IRIS_CONNECTIONS: tuple[tuple[int, int], ...] = (*_path(469, 470, 471, 472, 469),
                                                           *_path(474, 475, 476, 477, 474))
# Neither rim nor centre touches the mesh: each centre is linked to its rim's four points and to the two
# corners of its eye (right eye 33 and 133, left eye 263 and 362, the ends of MediaPipe's eye contours).
IRIS_LINKS: tuple[tuple[int, int], ...] = (
    (468, 469), (468, 470), (468, 471), (468, 472), (468, 33), (468, 133),
    (473, 474), (473, 475), (473, 476), (473, 477), (473, 263), (473, 362),
)

# The lips' connection set is two rings (outer and inner lip) with no tesselation edge between them; the
# mediapipe_lips graph links them as lips20 links dlib's: the outer to the inner mouth corners (61-78,
# 291-308) and midpoints (0-13 upper, 17-14 lower).
MEDIAPIPE_LIP_LINKS: tuple[tuple[int, int], ...] = ((61, 78), (291, 308), (0, 13), (14, 17))

# ---- MediaPipe Pose and Hand ---------------------------------------------------------------------------

# Pose (33 landmarks; 0 nose, 1-6 eyes, 7-8 ears, 9-10 mouth left/right, 11-12 shoulders, 13-14 elbows,
# 15-16 wrists, 17-22 hand points, 23-24 hips, 25-26 knees, 27-28 ankles, 29-30 heels, 31-32 foot index;
# odd = the subject's left): MediaPipe's POSE_LANDMARKS connections, 35 edges.
MEDIAPIPE_POSE_CONNECTIONS: tuple[tuple[int, int], ...] = (
    *_path(7, 3, 2, 1, 0, 4, 5, 6, 8),     # ears, eyes and nose
    (9, 10),                               # mouth
    *_path(12, 11, 23, 24, 12),            # shoulders and hips
    *_path(11, 13, 15, 17, 19, 15, 21),    # left arm and hand
    *_path(12, 14, 16, 18, 20, 16, 22),    # right arm and hand
    *_path(23, 25, 27, 29, 31, 27),        # left leg and foot
    *_path(24, 26, 28, 30, 32, 28),        # right leg and foot
)
# Those connections leave three pieces (head, mouth, body); these links join them: the mouth corners to
# the nose (0-9, 0-10) and each mouth corner to the shoulder of its side (9-11, 10-12), the neck's place.
POSE_LINKS: tuple[tuple[int, int], ...] = ((0, 9), (0, 10), (9, 11), (10, 12))

# Hand (21 landmarks: 0 wrist, then four per finger from the palm out: thumb 1-4, index 5-8, middle 9-12,
# ring 13-16, pinky 17-20): MediaPipe's HAND_CONNECTIONS, 21 edges.
MEDIAPIPE_HAND_CONNECTIONS: tuple[tuple[int, int], ...] = (
    *_path(0, 1, 2, 3, 4),
    *_path(0, 5, 6, 7, 8),
    *_path(9, 10, 11, 12),
    *_path(13, 14, 15, 16),
    *_path(0, 17, 18, 19, 20),
    *_path(5, 9, 13, 17),                  # across the palm
)

# ---- MediaPipe Holistic --------------------------------------------------------------------------------

# The 543-row layout of MediaPipe Holistic landmark files (as in Kaggle's GISLR parquet files): the face
# mesh without irises, the left hand, the pose, the right hand.
HOLISTIC_PARTS: dict[str, range] = {
    "face": range(468),
    "left_hand": range(468, 489),
    "pose": range(489, 522),
    "right_hand": range(522, 543),
}
_POSE0 = HOLISTIC_PARTS["pose"].start
# The cross-part links, in holistic numbering: the pose's wrists to the hands' wrists (pose 15, the left
# wrist, to left hand 0; pose 16 to right hand 0) and the pose's nose to the face mesh's nose tip (face 1).
HOLISTIC_LINKS: tuple[tuple[int, int], ...] = (
    (_POSE0 + 15, HOLISTIC_PARTS["left_hand"].start),
    (_POSE0 + 16, HOLISTIC_PARTS["right_hand"].start),
    (_POSE0 + 0, HOLISTIC_PARTS["face"].start + 1),
)

# ---- OpenPose ------------------------------------------------------------------------------------------

# BODY_25: 0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left, 8 mid hip, 9-11 right hip/knee/ankle,
# 12-14 left, 15-16 right/left eye, 17-18 right/left ear, 19-21 left big toe/small toe/heel, 22-24 right;
# its 24 limbs (the skeleton OpenPose draws).
_BODY25_EDGES = (
    *_path(0, 1, 8),
    *_path(1, 2, 3, 4), *_path(1, 5, 6, 7),
    *_path(8, 9, 10, 11), *_path(8, 12, 13, 14),
    *_path(17, 15, 0, 16, 18),
    *_path(14, 19, 20), (14, 21),
    *_path(11, 22, 23), (11, 24),
)
# COCO-18: 0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left, 8-10 right hip/knee/ankle, 11-13 left,
# 14-15 right/left eye, 16-17 right/left ear; its 17 limbs as OpenPose draws them (the neck to both hips;
# ST-GCN's "openpose" layout joins each hip to its shoulder instead).
_COCO18_EDGES = (
    *_path(0, 1),
    *_path(1, 2, 3, 4), *_path(1, 5, 6, 7),
    *_path(1, 8, 9, 10), *_path(1, 11, 12, 13),
    *_path(16, 14, 0, 15, 17),
)


# ---- functions -----------------------------------------------------------------------------------------

def get_graph(graph: str | LandmarkGraph) -> LandmarkGraph:
    """The named graph (one of :data:`GRAPHS`), or ``graph`` itself when it is a :class:`LandmarkGraph`."""
    if isinstance(graph, LandmarkGraph):
        return graph
    if graph not in GRAPHS:
        raise ValueError(f"graphs: graph must be one of {tuple(GRAPHS)} or a LandmarkGraph, got {graph!r}")
    return GRAPHS[graph]


def edges(graph: str | LandmarkGraph) -> list[tuple[int, int]]:
    """The undirected edge list ``[(i, j), ...]`` (``i < j``, no self-loops) of ``graph``."""
    return list(get_graph(graph).edges)


def _neighbours(g: LandmarkGraph) -> list[list[int]]:
    neighbours: list[list[int]] = [[] for _ in range(g.num_nodes)]
    for i, j in g.edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    return neighbours


def _hops_from(neighbours: list[list[int]], source: int, max_hop: int | None = None) -> list[float]:
    """Breadth-first hop counts from ``source`` (``inf`` beyond ``max_hop`` or unreachable)."""
    inf = float("inf")
    row = [inf] * len(neighbours)
    row[source] = 0.0
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if max_hop is not None and row[node] >= max_hop:
            continue
        for other in neighbours[node]:
            if row[other] == inf:
                row[other] = row[node] + 1
                queue.append(other)
    return row


def hop_distance(graph: str | LandmarkGraph, max_hop: int | None = None) -> Tensor:
    """Hop (shortest-path) distances ``[V, V]`` (float64) between the nodes of ``graph``, by breadth-first
    search; ``inf`` for pairs farther apart than ``max_hop`` (None: no limit) or not connected."""
    g = get_graph(graph)
    neighbours = _neighbours(g)
    return torch.tensor([_hops_from(neighbours, s, max_hop) for s in range(g.num_nodes)], dtype=torch.float64)


def normalize_digraph(a: Tensor) -> Tensor:
    """``a D^-1`` with D the diagonal of ``a``'s column sums (columns summing to 0 are left 0): every
    column with an entry sums to 1."""
    degree = a.sum(0)
    inverse = torch.where(degree > 0, 1.0 / torch.where(degree > 0, degree, 1.0), 0.0)
    return a * inverse


def adjacency(
    graph: str | LandmarkGraph = "face68",
    strategy: str = "spatial",
    max_hop: int = 1,
    dilation: int = 1,
    center: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The normalised partition matrices ``A`` of ``graph``, ``[K, V, V]``.

    ``A[k, v, w]`` weighs the message from node v to node w in partition k (see the module docstring for
    the strategies and the normalisation). K is 1 (``uniform``), the number of hops
    ``len(range(0, max_hop + 1, dilation))`` (``distance``), or 1 + 2 * (that number - 1) (``spatial``).

    Args:
        graph: a name in :data:`GRAPHS` (``"face68"``, ``"lips20"``, ``"mediapipe_face_mesh"``, ...) or a
            :class:`LandmarkGraph`.
        strategy: ``"uniform"``, ``"distance"`` or ``"spatial"``.
        max_hop: the farthest hop in a neighbourhood (>= 0).
        dilation: the spacing of the hops taken (>= 1): hops 0, dilation, 2*dilation, ... <= max_hop.
        center: the centre node of ``spatial`` (default: the graph's, e.g. the nose tip 30 for face68 and
            the outer upper-lip midpoint, node 3 = dlib 51, for lips20).
        dtype: the floating dtype of the result.
    """
    g = get_graph(graph)
    if strategy not in STRATEGIES:
        raise ValueError(f"graphs.adjacency: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if max_hop < 0:
        raise ValueError(f"graphs.adjacency: max_hop must be >= 0, got {max_hop}")
    if dilation < 1:
        raise ValueError(f"graphs.adjacency: dilation must be >= 1, got {dilation}")
    center = g.center if center is None else center
    if not 0 <= center < g.num_nodes:
        raise ValueError(f"graphs.adjacency: center must be in [0, {g.num_nodes}), got {center}")
    hops = range(0, max_hop + 1, dilation)
    dist = hop_distance(g, max_hop)
    within = torch.zeros_like(dist)
    for hop in hops:
        within[dist == hop] = 1
    normalised = normalize_digraph(within)
    if strategy == "uniform":
        parts = [normalised]
    elif strategy == "distance":
        parts = [torch.where(dist == hop, normalised, 0.0) for hop in hops]
    else:
        # hop distances are symmetric: the distances from the centre are those to it
        to_center = torch.tensor(_hops_from(_neighbours(g), center), dtype=torch.float64)
        # [v, w]: the neighbour v against the root w
        closer = to_center[:, None] < to_center[None, :]
        parts = []
        for hop in hops:
            at_hop = dist == hop
            if hop == 0:
                parts.append(torch.where(at_hop, normalised, 0.0))
            else:
                parts.append(torch.where(at_hop & closer, normalised, 0.0))
                parts.append(torch.where(at_hop & ~closer, normalised, 0.0))
    return torch.stack(parts).to(dtype)


def region(graph: str | LandmarkGraph, name: str) -> tuple[int, ...]:
    """The nodes of ``graph``'s region ``name`` (``"lips"``, ``"left_eye"``, ``"upper_body"``, ...), in the
    graph's numbering; regions can be joined (``region(g, "lips") + region(g, "left_hand")``) and passed
    to :func:`subgraph`."""
    return get_graph(graph).region(name)


def subgraph(
    graph: str | LandmarkGraph,
    nodes: str | Sequence[int],
    name: str | None = None,
    *,
    center: int | None = None,
    links: Sequence[tuple[int, int]] = (),
) -> LandmarkGraph:
    """The sub-graph of ``graph`` on ``nodes``, renumbered in the order given.

    It keeps the edges of ``graph`` among the chosen nodes (plus ``links``), node ``i`` being
    ``nodes[i]``; its ``landmarks`` are the chosen nodes' source indices (``graph.landmarks[nodes[i]]``, so
    sub-graphs of sub-graphs still point into the detector's array), and it keeps the regions of ``graph``
    that lie wholly among the chosen nodes, renumbered.

    Args:
        graph: a name in :data:`GRAPHS` or a :class:`LandmarkGraph`.
        nodes: node indices of ``graph`` (distinct), or the name of one of its regions.
        name: the sub-graph's name (default: ``"<graph>_<region>"``, or ``"<graph>_sub<V>"`` for a list).
        center: the centre, as a node of ``graph`` among ``nodes``. Default: ``graph``'s centre when
            chosen; otherwise the chosen node nearest to it (in hops of ``graph``), ties going to the one
            with the least total hop distance to the other chosen nodes (the most central), then to the
            first in ``nodes``.
        links: extra edges ``(i, j)`` between chosen nodes, in ``graph``'s numbering.
    """
    g = get_graph(graph)
    if isinstance(nodes, str):
        default_name = f"{g.name}_{nodes}"
        chosen = tuple(g.region(nodes))
    else:
        chosen = tuple(int(n) for n in nodes)
        default_name = f"{g.name}_sub{len(chosen)}"
    if not chosen or any(not 0 <= n < g.num_nodes for n in chosen):
        raise ValueError(f"graphs.subgraph: nodes must be a non-empty list of nodes in [0, {g.num_nodes}), "
                         f"got {list(chosen[:8])}")
    if len(set(chosen)) != len(chosen):
        raise ValueError("graphs.subgraph: nodes must be distinct")
    index = {node: new for new, node in enumerate(chosen)}
    outside = [pair for pair in links if pair[0] not in index or pair[1] not in index]
    if outside:
        raise ValueError(f"graphs.subgraph: links must join chosen nodes, got {outside[:3]}")
    kept = [(index[i], index[j]) for i, j in (*g.edges, *links) if i in index and j in index]
    if center is not None:
        if center not in index:
            raise ValueError(f"graphs.subgraph: center must be one of the chosen nodes, got {center}")
        new_center = index[center]
    elif g.center in index:
        new_center = index[g.center]
    else:
        neighbours = _neighbours(g)
        to_center = _hops_from(neighbours, g.center)
        nearest = min(to_center[n] for n in chosen)
        candidates = [n for n in chosen if to_center[n] == nearest]
        if len(candidates) > 1:
            def spread(node: int) -> float:
                hops = _hops_from(neighbours, node)
                return sum(hops[n] for n in chosen if hops[n] != float("inf"))
            candidates = [min(candidates, key=spread)]  # min keeps the first of equals
        new_center = index[candidates[0]]
    regions = tuple(
        (key, tuple(index[n] for n in members))
        for key, members in g.regions if all(n in index for n in members)
    )
    return LandmarkGraph(
        name=name if name is not None else default_name,
        num_nodes=len(chosen),
        edges=_normalise_edges(kept),
        center=new_center,
        landmarks=tuple(g.landmarks[n] for n in chosen),
        regions=regions,
    )


def plot(
    graph: str | LandmarkGraph,
    points,
    path: str | Path,
    *,
    labels: bool = False,
    title: str | None = None,
    image_coordinates: bool = True,
    size: float = 6.0,
    dpi: int = 100,
) -> Path:
    """Write a PNG of ``graph``'s skeleton drawn on ``points`` to ``path``, and return the path.

    Args:
        graph: a name in :data:`GRAPHS` or a :class:`LandmarkGraph`.
        points: ``[V, 2]`` (or ``[V, >=2]``, the first two columns taken as x, y) node coordinates: a tensor,
            an array or nested lists.
        path: the PNG file to write.
        labels: write each node's index next to it.
        title: the figure title (default: the graph's name).
        image_coordinates: y grows downwards (pixel coordinates, as detectors emit them).
        size: the figure's width and height in inches.
        dpi: dots per inch.

    Needs matplotlib (the ``bench`` extra); raises ImportError without it.
    """
    try:
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "graphs.plot needs matplotlib: pip install matplotlib (or facekernels[bench])"
        ) from error
    g = get_graph(graph)
    xy = torch.as_tensor(points).detach().to("cpu", torch.float64)
    if xy.dim() != 2 or xy.size(0) != g.num_nodes or xy.size(1) < 2:
        raise ValueError(
            f"graphs.plot: points must be [{g.num_nodes}, 2] for graph {g.name!r}, got {list(xy.shape)}"
        )
    xy = xy[:, :2].tolist()
    figure = Figure(figsize=(size, size), dpi=dpi)
    axes = figure.add_subplot()
    axes.add_collection(LineCollection([(xy[i], xy[j]) for i, j in g.edges], colors="tab:blue", linewidths=0.8))
    xs, ys = zip(*xy)
    axes.scatter(xs, ys, s=6, c="tab:red", zorder=2)
    axes.scatter([xs[g.center]], [ys[g.center]], s=30, c="black", marker="x", zorder=3)
    if labels:
        for node, (x, y) in enumerate(xy):
            axes.annotate(str(node), (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points")
    axes.set_aspect("equal")
    axes.autoscale_view()
    if image_coordinates:
        axes.invert_yaxis()
    axes.set_title(title if title is not None else f"{g.name} (V = {g.num_nodes}, {len(g.edges)} edges)")
    path = Path(path)
    figure.savefig(path, format="png")
    return path


# ---- the graphs ----------------------------------------------------------------------------------------

def _offset(pairs, start: int) -> list[tuple[int, int]]:
    return [(i + start, j + start) for i, j in pairs]


FACE68 = LandmarkGraph(
    name="face68",
    num_nodes=68,
    edges=_normalise_edges(_FACE68_CONTOURS + _FACE68_LINKS),
    center=30,  # the nose tip: rigid, central, and the hub between the eyes, brows and mouth
    regions=_FACE68_REGIONS,
)

# The lips: dlib 48-59 (outer ring) are nodes 0-11 and 60-67 (inner ring) nodes 12-19; the edges are the
# face graph's among these landmarks (the two rings, the corner and midpoint links). Centre: the outer
# upper-lip midpoint (dlib 51), the lip point that moves least in speech (the upper lip is held by the
# nose; the lower lip follows the jaw), and symmetric between the corners.
LIPS20 = subgraph(FACE68, "lips", "lips20", center=51)

_MESH_EDGES = _normalise_edges(
    pair for a, b, c in MEDIAPIPE_FACE_MESH_TRIANGLES for pair in ((a, b), (b, c), (c, a))
)
_MESH_REGIONS = tuple(MEDIAPIPE_FACE_REGIONS.items())

MEDIAPIPE_FACE_MESH = LandmarkGraph(
    name="mediapipe_face_mesh",
    num_nodes=468,
    edges=_MESH_EDGES,
    center=1,  # the nose tip
    regions=_MESH_REGIONS,
)

MEDIAPIPE_FACE_MESH_IRIS = LandmarkGraph(
    name="mediapipe_face_mesh_iris",
    num_nodes=478,
    edges=_normalise_edges([*_MESH_EDGES, *MEDIAPIPE_IRIS_CONNECTIONS, *IRIS_LINKS]),
    center=1,
    regions=(*_MESH_REGIONS, ("right_iris", tuple(range(468, 473))), ("left_iris", tuple(range(473, 478)))),
)

# The 40 lip points of the face mesh in MEDIAPIPE_FACE_REGIONS["lips"]'s order (outer ring 0-19, inner
# ring 20-39), their tesselation edges (the two rings) and the four outer-inner links; centre: the outer
# upper-lip midpoint (landmark 0), as lips20's.
MEDIAPIPE_LIPS = subgraph(MEDIAPIPE_FACE_MESH, "lips", "mediapipe_lips", center=0, links=MEDIAPIPE_LIP_LINKS)

_POSE_REGIONS = (
    ("face", tuple(range(11))),
    ("upper_body", tuple(range(25))),  # head, arms, hands and hips: the old upper-body pose model's 25
    ("left_arm", (11, 13, 15, 17, 19, 21)),
    ("right_arm", (12, 14, 16, 18, 20, 22)),
    ("lower_body", tuple(range(23, 33))),
)

MEDIAPIPE_POSE = LandmarkGraph(
    name="mediapipe_pose",
    num_nodes=33,
    edges=_normalise_edges([*MEDIAPIPE_POSE_CONNECTIONS, *POSE_LINKS]),
    center=0,  # the nose: there is no neck or mid-shoulder landmark, and the nose is the head's hub
    regions=_POSE_REGIONS,
)

_HAND_REGIONS = (
    ("palm", (0, 1, 5, 9, 13, 17)),
    ("thumb", (1, 2, 3, 4)),
    ("index_finger", (5, 6, 7, 8)),
    ("middle_finger", (9, 10, 11, 12)),
    ("ring_finger", (13, 14, 15, 16)),
    ("pinky", (17, 18, 19, 20)),
)

MEDIAPIPE_HAND = LandmarkGraph(
    name="mediapipe_hand",
    num_nodes=21,
    edges=_normalise_edges(MEDIAPIPE_HAND_CONNECTIONS),
    center=0,  # the wrist, the root of the five finger chains
    regions=_HAND_REGIONS,
)

MEDIAPIPE_HOLISTIC = LandmarkGraph(
    name="mediapipe_holistic",
    num_nodes=543,
    edges=_normalise_edges([
        *MEDIAPIPE_FACE_MESH.edges,
        *_offset(MEDIAPIPE_HAND.edges, HOLISTIC_PARTS["left_hand"].start),
        *_offset(MEDIAPIPE_POSE.edges, HOLISTIC_PARTS["pose"].start),
        *_offset(MEDIAPIPE_HAND.edges, HOLISTIC_PARTS["right_hand"].start),
        *HOLISTIC_LINKS,
    ]),
    # the pose's nose: the junction of the face (one hop to the nose tip) with the body and hands
    center=_POSE0,
    regions=(
        *((key, tuple(part)) for key, part in HOLISTIC_PARTS.items()),
        *_MESH_REGIONS,
        ("upper_body", tuple(n + _POSE0 for n in dict(_POSE_REGIONS)["upper_body"])),
    ),
)

BODY25 = LandmarkGraph(
    name="openpose_body25",
    num_nodes=25,
    edges=_normalise_edges(_BODY25_EDGES),
    center=1,  # the neck
    regions=(("upper_body", (0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 18)),),  # head, arms, mid hip
)

COCO18 = LandmarkGraph(
    name="openpose_coco18",
    num_nodes=18,
    edges=_normalise_edges(_COCO18_EDGES),
    center=1,  # the neck
    regions=(("upper_body", (0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 14, 15, 16, 17)),),  # head, arms, hips
)

GRAPHS: dict[str, LandmarkGraph] = {
    g.name: g
    for g in (FACE68, LIPS20, MEDIAPIPE_FACE_MESH, MEDIAPIPE_FACE_MESH_IRIS, MEDIAPIPE_LIPS, MEDIAPIPE_POSE,
              MEDIAPIPE_HAND, MEDIAPIPE_HOLISTIC, BODY25, COCO18)
}
