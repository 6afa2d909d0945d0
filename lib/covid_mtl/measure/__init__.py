"""What a prediction means for a patient: lung mask, quantification, self-checks, report, DICOM SEG, summary."""
