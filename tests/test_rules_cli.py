"""`syncwatch rules test` on a committed OTLP/JSON file of stock pika + requests spans
(tests/fixtures/rules_stock_spans.otlp.jsonl, written by tests/test_rules_e2e.py's apps)."""

from __future__ import annotations

from pathlib import Path

import yaml

from syncwatch.cli.main import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPANS = str(FIXTURES / "rules_stock_spans.otlp.jsonl")
CONFIG = str(FIXTURES / "rules_config.yaml")


def test_prints_the_mapping_and_transactions(capsys):
    assert main(["rules", "test", "--config", CONFIG, SPANS]) == 0
    out = capsys.readouterr().out
    assert "  d362c3387e92a247 'orders send': rule order-published -> flow orders, source, SO-1001 (attribute)\n" in out
    assert "  b35144cf029fbd9c 'GET': no rule (unrelated)\n" in out
    assert "  56dd985b2a7b126b 'POST': rule erp-post -> flow orders, attempt+confirm, SO-1001 (stitched)\n" in out
    assert (
        "  cbc6ff0103ab5d49 'POST': rule erp-post -> flow orders, attempt+fail (give_up_after), SO-1003 (stitched)\n"
        in out
    )
    assert out.split("transactions:\n")[1] == (
        "  SO-1001 orders: storefront -> erp: 1 attempt(s) [201], confirmed\n"
        "  SO-1002 orders: storefront -> erp: 2 attempt(s) [429, 201], confirmed\n"
        "  SO-1003 orders: storefront -> erp: 3 attempt(s) [500, 500, 500], failed (500)\n"
        "  SO-1004 orders: storefront -> erp: 1 attempt(s) [422], failed (422)\n"
        "  SO-1005 orders: storefront -> erp: 2 attempt(s) [error, 201], confirmed\n"
        "  SO-1006 orders: storefront -> erp: 0 attempt(s) [-], open\n"
        "  SO-1007 orders: storefront -> erp: 0 attempt(s) [-], open\n"
        "  SO-1008 orders: storefront -> erp: 2 attempt(s) [500, 201], confirmed\n"
        "28 spans: 27 mapped by rules, 1 unrelated, 0 without ID\n"
    )


def test_spans_of_a_flow_without_an_id_exit_non_zero(tmp_path, capsys):
    cfg = yaml.safe_load(Path(CONFIG).read_text())
    del cfg["rules"]["map"]["order-published"], cfg["rules"]["map"]["order-consumed"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["rules", "test", "--config", str(path), SPANS]) == 1
    out = capsys.readouterr().out
    assert "  56dd985b2a7b126b 'POST': rule erp-post -> flow orders, attempt+confirm, NO CORRELATION ID\n" in out
    assert out.endswith("28 spans: 11 mapped by rules, 17 unrelated, 11 without ID\n")


def test_bad_rule_names_rule_and_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rules": {
                    "map": {
                        "erp-post": {
                            "flow": "orders",
                            "preset": "http-client",
                            "correlation": {"attribute": "url.path", "regex": "(a)\\1"},
                        }
                    }
                }
            }
        )
    )
    assert main(["rules", "test", "--config", str(path), SPANS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncwatch: invalid configuration: rules.map.erp-post.correlation.0.regex: not a regular")
