"""DICOM SEG: written from a read DICOM series, read back with pydicom/highdicom, checked frame by frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from covid_mtl.measure.dicom_seg import SEGMENT_LABEL, write_dicom_seg
from covid_mtl.errors import CovidMTLError
from covid_mtl.image import Image
from covid_mtl.io import read_image
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.demo.sample_data import write_ct_series

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Image, np.ndarray]:
    ph = make_phantom("covid", 3, shape=(8, 64, 64), spacing=(5.0, 2.5, 2.5))
    folder = tmp_path_factory.mktemp("ct") / "series"
    write_ct_series(folder, ph, "seg_test")
    image = read_image(folder)
    np.testing.assert_array_equal(image.array, ph.hu)  # the reader gives the phantom's z order back
    return image, ph.lesion


def test_seg_round_trip(series, tmp_path: Path) -> None:
    import highdicom as hd

    image, lesion = series
    assert lesion.any() and not lesion.all(axis=(1, 2)).any()
    out = write_dicom_seg(lesion, image, tmp_path / "seg.dcm", model_version="tiny-0123456789ab")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG"
    assert int(ds.NumberOfFrames) == lesion.shape[0]  # one frame per source slice, empty ones included
    assert (int(ds.Rows), int(ds.Columns)) == lesion.shape[1:]
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == SEGMENT_LABEL
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert segment.AnatomicRegionSequence[0].CodeValue == "39607008"
    assert segment.SegmentAlgorithmName == "covid-mtl"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "tiny-0123456789ab"
    lightness, a, b = segment.RecommendedDisplayCIELabValue  # the reports' red: light, red (a > 0), warm (b > 0)
    assert 0.3 < lightness / 65535 < 0.7 and a / 65535 > 0.7 and b / 65535 > 0.6
    # references: same study, series, frame of reference and every source instance
    assert ds.StudyInstanceUID == image.meta["study_uid"]
    assert ds.FrameOfReferenceUID == image.meta["frame_of_reference_uid"]
    ref_series = ds.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == image.meta["series_uid"]
    referenced = [item.ReferencedSOPInstanceUID for item in ref_series.ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(image.meta["sop_instance_uids"])
    # pixels, per source instance, equal the mask in z order
    seg = hd.seg.Segmentation.from_dataset(ds)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=image.meta["sop_instance_uids"],
                                               segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0], lesion)
    # geometry: each frame sits where its source slice does
    for frame, path in zip(ds.PerFrameFunctionalGroupsSequence, image.meta["files"]):
        src = pydicom.dcmread(path, stop_before_pixels=True)
        ipp = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in ipp], [float(v) for v in src.ImagePositionPatient])
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([image.spacing[1], image.spacing[2]])


def test_empty_mask_still_writes_every_frame(series, tmp_path: Path) -> None:
    image, lesion = series
    ds = pydicom.dcmread(write_dicom_seg(np.zeros_like(lesion), image, tmp_path / "empty.dcm"))
    assert int(ds.NumberOfFrames) == lesion.shape[0]


def test_bad_sources_are_refused(series, tmp_path: Path) -> None:
    image, lesion = series
    with pytest.raises(CovidMTLError, match="does not match"):
        write_dicom_seg(lesion[:-1], image, tmp_path / "x.dcm")
    nifti_like = Image(array=image.array, spacing=image.spacing, affine=image.affine, is_hu=True,
                       source="ct.nii.gz", meta={"format": "nifti"})
    with pytest.raises(CovidMTLError, match="not DICOM"):
        write_dicom_seg(lesion, nifti_like, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_anonymised_real_series_without_uids_is_refused(real_ct: Path, tmp_path: Path) -> None:
    image = read_image(real_ct / "totalsegmentator_example/example_ct_dicom")
    with pytest.raises(CovidMTLError, match="StudyInstanceUID"):
        write_dicom_seg(np.zeros(image.shape, np.uint8), image, tmp_path / "x.dcm")


def test_correction_carries_its_class_and_reads_back_voxel_for_voxel(series, tmp_path: Path) -> None:
    from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification

    image, lesion = series
    ds = pydicom.dcmread(write_dicom_seg(lesion, image, tmp_path / "c.dcm", classification="non-covid",
                                         corrected=True))
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg_classification(ds) == "non-covid"
    np.testing.assert_array_equal(read_dicom_seg(ds, image), lesion)
    automatic = pydicom.dcmread(write_dicom_seg(lesion, image, tmp_path / "a.dcm"))
    assert seg_classification(automatic) is None
    with pytest.raises(CovidMTLError, match="unknown classification"):
        write_dicom_seg(lesion, image, tmp_path / "bad.dcm", classification="flu")


def test_a_seg_off_its_series_is_refused(series, tmp_path: Path) -> None:
    from covid_mtl.measure.dicom_seg import read_dicom_seg

    image, lesion = series
    ds = pydicom.dcmread(write_dicom_seg(lesion, image, tmp_path / "c.dcm", corrected=True))
    other_series = Image(array=image.array, spacing=image.spacing, affine=image.affine, is_hu=True, source="x",
                         meta={**image.meta, "series_uid": "1.2.3"})
    with pytest.raises(CovidMTLError, match="references series"):
        read_dicom_seg(ds, other_series)
    smaller = Image(array=image.array[:, :-1], spacing=image.spacing, affine=image.affine, is_hu=True, source="x",
                    meta=image.meta)
    with pytest.raises(CovidMTLError, match="frames are"):
        read_dicom_seg(ds, smaller)
    missing = Image(array=image.array, spacing=image.spacing, affine=image.affine, is_hu=True, source="x",
                    meta={**image.meta, "sop_instance_uids": ["1.2.3.4"] + image.meta["sop_instance_uids"][1:]})
    with pytest.raises(CovidMTLError, match="does not lie on"):
        read_dicom_seg(ds, missing)
