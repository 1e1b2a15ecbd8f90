    # the logit-adjustment trade-off re-ranks the progressive job's own scores: tau = 0 reproduces its accuracy
    trade = tmp_path / "tradeoff"
    result = subprocess.run([sys.executable, "-m", "experiments.tradeoff", str(out), "--taus", "1", "--out",
                             str(trade)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(trade / "jobs.csv")
    assert sorted(rows["tau"]) == [0.0, 1.0] and set(rows["seed"]) == {0}
    progressive = jobs[jobs["stage_order"] == "progressive"].iloc[0]
    assert rows.loc[rows["tau"] == 0.0, "test/acc_overall"].item() == progressive["test/acc_overall"]
    assert (trade / "anchor_vs_tail.png").exists() and "τ_val" in (trade / "table.md").read_text()
