"""fse_plugin: FSErasing and FS-CAM for insightface arcface_torch.

Data flows record file -> image + mask -> erasing -> batch:
``recordio`` (read MS1M/WebFace .rec) -> ``maskcache`` (parser masks, precomputed by ``parser``)
-> ``erasing`` (FSErasing) -> ``dataset`` (drop-in for arcface_torch's MXFaceDataset).
``cam`` explains models per face region; ``evaluation`` runs LFW-style packs and IJB-B/C.
"""
__version__ = "0.1.0"
