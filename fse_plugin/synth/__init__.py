"""Procedural synthetic faces with exact 25-class masks and landmarks, deterministic by seed.

Why: every stage of the pipeline (record IO, parser, mask cache, FSErasing, FS-CAM, evaluation)
needs faces whose region masks are known exactly and whose identities are known, without downloading
MS1M or FaceSynthetics. The faces need not look photo-real; they must be *testable*.

- ``identity``: who (:class:`Identity`, fixed per person) and how they look in one image
  (:class:`Look`: pose, expression, accessories, background, light), each drawn from its own key;
- ``geometry``: every part of a face in the canonical aligned 112x112 frame, as 3-D points;
- ``rendering``: pose, frame (ArcFace-aligned or loose crop) and paint image and mask together;
- ``writers``: train.rec, verification .bin, FaceSynthetics layout, IJB-B/C layout.

Masks name left and right as the authors' labels_25 maps do (``labels.SIDE``): the skin parts by the
subject's sides (right_cheek on the image-left of a frontal face), the eyes, brows and ears by the
image's sides (right_eye on the image-right). Landmarks are 68 iBUG points (point 0 on the
image-left), then the image-left pupil (row 68) and the image-right pupil (row 69).

Identity streams keep data sets apart: training records (``write_rec``) use ``TRAIN``; verification
packs and IJB sets use ``HELDOUT``; FaceSynthetics-style parser data uses ``PARSER``. Distinct
streams never share an identity, whatever the seeds.
"""
from fse_plugin.synth.identity import (COLLARS, GLASSES_STYLES, HAIR_STYLES, HEADWEAR_STYLES,
                                       HELDOUT, PARSER, TRAIN, Identity, Look, image_spec,
                                       make_identities, sample_look)
from fse_plugin.synth.rendering import Render, frame_matrix, render, render_aligned, render_image
from fse_plugin.synth.writers import (IJBLayout, pair_plan, write_facesynthetics, write_ijb,
                                      write_pairs_bin, write_rec)

__all__ = ["TRAIN", "HELDOUT", "PARSER", "HAIR_STYLES", "GLASSES_STYLES", "HEADWEAR_STYLES",
           "COLLARS", "Identity",
           "Look", "image_spec", "make_identities", "sample_look", "Render", "frame_matrix",
           "render",
           "render_aligned", "render_image", "IJBLayout", "pair_plan", "write_facesynthetics",
           "write_ijb", "write_pairs_bin", "write_rec"]
