"""fse_plugin: FSErasing and FS-CAM for insightface arcface_torch.

Data flows record file -> image + mask -> erasing -> batch:
``recordio`` (read MS1M/WebFace .rec) -> ``maskcache`` (parser masks, built once by ``parsing``'s
parser) -> ``erasing`` (FSErasing, set by ``fseconfig``: the ``config.fse`` line) -> ``dataset``
(drop-in for arcface_torch's MXFaceDataset).
``cam`` explains models per face region; ``evaluation`` runs LFW-style packs, IJB-B/C and the
semantic-occlusion benchmark; ``study`` measures what FSErasing does over seeds. ``common`` is the
helper layer all of them share; ``cli`` is the ``fse`` command.
"""
__version__ = "0.3.0"
