"""Evidence packages: one archive per control and period that anyone can verify offline.

The archive (``.tar.gz``; members in a fixed order, zeroed owners and times)
holds:

``checkpoint.txt``
    the signed C2SP checkpoint every proof is against;
``log-key.pub``
    the log's verifier key (a convenience: verify with a key you obtained
    independently);
``controls.json``
    the control, its framework, related controls, the period and summary counts;
``records.jsonl``
    one record per leaf: its index, leaf hash, exact entry text, and the
    payload (exact canonical text and salt) while it can still be read, else
    its status (``erased``, ``purged``; ``inline`` for events that carry it);
``report.html``
    the same for people;
``assessment-results.json``
    OSCAL 1.1.2 assessment results (`nexus_audit.oscal`);
``export-event.json``
    the ``evidence.exported`` leaf appended by this export, which records the
    SHA-256 of the four files above;
``proofs/<index>.tlog-proof``
    a C2SP tlog-proof for every record and for the export event;
``manifest.json``
    the SHA-256 of every other file.

The manifest catches any altered byte and names the file. It is not signed,
but it need not be: the records and the export event are proven against the
signed checkpoint, and the export event, in the log itself, fixes the hashes
of the content files, so rewriting a file and its manifest line still fails.
"""

from nexus_audit.evidence.export import ExportSummary, export_archive
from nexus_audit.evidence.format import EvidenceError
from nexus_audit.evidence.verify import VerifiedEvidence, verify_archive

__all__ = ["EvidenceError", "ExportSummary", "VerifiedEvidence", "export_archive", "verify_archive"]
