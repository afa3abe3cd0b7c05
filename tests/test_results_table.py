"""The README results overview must match the stored RESULT json files."""

from Utils.tools import results_table


def test_readme_results_section_is_current():
    assert results_table.update_readme(check=True), (
        "README results section is stale: run `python -m Utils.tools.results_table`")


def test_render_reads_stored_results(tmp_path):
    res = tmp_path / "assets" / "Foo" / "results"
    res.mkdir(parents=True)
    (res / "beauty.json").write_text(
        '{"model": "Foo", "data": "seqtxt:x/Beauty.txt", "metrics": {"Recall@10": 0.05, "NDCG@10": 0.02},'
        ' "baseline": {"name": "Popularity", "metrics": {"Recall@10": 0.011, "NDCG@10": 0.005}}}')
    (res / "synthetic.json").write_text('{"model": "Foo", "data": "synthetic", "metrics": {"AUC": 0.9}}')
    table = results_table.render(tmp_path)
    assert "R@10 0.0500" in table and "Popularity: R@10 0.0110" in table
    assert "AUC 0.9" not in table  # synthetic runs are not headline numbers


def test_stage_ledgers_are_current():
    assert results_table.update_ledgers(check=True), (
        "a ledger in Classic Models/<Stage>/README.md is stale: run `python -m Utils.tools.results_table`")
