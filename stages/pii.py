"""PII redaction (DESIGN.md 4, `pii`): e-mail and IP addresses replaced as datatrove's
`PIIFormatter` replaces them (FineWeb, FineWeb-2, Dolma and TxT360 publish this way),
and phone numbers as an option.

A text transform: the stage rewrites `text` (`rewrites_text`), so what is curated is
the redacted text, while `source_shard`/`source_row` still lead to the original.
datatrove's own formatter does the replacing (its patterns, its public-IP check, its
replacement addresses); the counts are its patterns' matches. datatrove cycles through
its replacement addresses across the whole stream; here the cycle starts again with
each document, so a document's redacted text depends on the document alone (a retried
batch writes the same text). Phone numbers, off by default, are found by
`phonenumbers` (Google's libphonenumber) for the `phone_region` given, and only valid
numbers are replaced.
"""

from __future__ import annotations

import pyarrow as pa

from thresher.stages.base import Chart, Resources, Stage


class PIIRedaction(Stage):
    name = "pii"
    rewrites_text = True
    kept_only = True  # redact what is still kept: the rest is not published
    columns = {"pii_emails": pa.int32(), "pii_ips": pa.int32(), "pii_phones": pa.int32()}
    default_resources = Resources(batch_size=1024)

    def __init__(self, emails: bool = True, ips: bool = True, only_public_ips: bool = True,
                 phones: bool = False, phone_region: str = "US",
                 phone_replacement: str = "555-0100", resources: Resources | None = None):
        super().__init__(resources)
        if not (emails or ips or phones):
            raise ValueError("pii: emails, ips and phones are all off: nothing to redact")
        if phones:
            import phonenumbers

            if phone_region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"pii: phone_region {phone_region!r} is not a region "
                                 "libphonenumber knows (ISO 3166 codes such as US, DE, FR)")
        self.emails, self.ips, self.only_public_ips = emails, ips, only_public_ips
        self.phones, self.phone_region, self.phone_replacement = phones, phone_region, \
            phone_replacement
        self._formatter = None

    def describe(self) -> dict:
        return {"emails": self.emails, "ips": self.ips, "only_public_ips": self.only_public_ips,
                "phones": self.phone_region if self.phones else False,
                "replacer": "datatrove PIIFormatter"}

    def setup(self) -> None:
        from datatrove.pipeline.formatters import PIIFormatter

        self._formatter = PIIFormatter(remove_emails=self.emails, remove_ips=self.ips,
                                       only_remove_public_ips=self.only_public_ips)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._formatter is None:
            self.setup()
        texts, counts = [], []
        for text in batch.column("text").to_pylist():
            text, found = self._redact(text or "")
            texts.append(text)
            counts.append(found)
        batch = batch.set_column(batch.schema.get_field_index("text"), "text",
                                 pa.array(texts, pa.string()))
        for i, (column, typ) in enumerate(self.columns.items()):
            batch = batch.append_column(column, pa.array([c[i] for c in counts], typ))
        return batch

    def _redact(self, text: str) -> tuple[str, tuple[int, int, int]]:
        """PIIFormatter.format's two steps, with their matches counted on the way."""
        emails_replacer, ip_replacer = self._formatter.emails_replacer, self._formatter.ip_replacer
        emails_replacer._replace_i = ip_replacer._replace_i = 0  # each document on its own
        emails = ips = phones = 0
        if self.emails:
            emails = len(emails_replacer.regex.findall(text))
            text = emails_replacer.replace(text)
        if self.ips:
            ips = sum(1 for m in ip_replacer.regex.finditer(text)
                      if ip_replacer.validator(m.group(0)))
            text = ip_replacer.replace(text)
        if self.phones:
            text, phones = self._redact_phones(text)
        return text, (emails, ips, phones)

    def _redact_phones(self, text: str) -> tuple[str, int]:
        import phonenumbers

        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
            text, self.phone_region, leniency=phonenumbers.Leniency.VALID)]
        for start, end in reversed(spans):
            text = text[:start] + self.phone_replacement + text[end:]
        return text, len(spans)

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        title = "PII replaced in curated documents (sample)"
        totals = {c[len("pii_"):]: sum(v or 0 for v in curated.column(c).to_pylist())
                  for c in self.columns if c in curated.column_names}
        if not any(totals.values()):
            return [Chart(title, why_not="no sampled curated document held PII to replace")]
        return [Chart(title, list(totals), {"replaced": list(totals.values())})]
