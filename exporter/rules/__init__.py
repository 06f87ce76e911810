"""Mapping rules: derive syncwatch stages and correlation IDs from the spans stock OpenTelemetry
instrumentations already emit, so an integration needs no syncwatch attribute to be watched."""
