"""Reference values for src/analysis/stats.rs, computed with SciPy.

Run: python3 -m venv /tmp/venv && /tmp/venv/bin/pip install scipy && /tmp/venv/bin/python tests/data/stats_reference.py
The numbers it prints are written into the unit tests of src/analysis/stats.rs.
"""
import numpy as np
from scipy import stats

a = [0.6832, 0.6978, 0.6511, 0.6702, 0.6650]
b = [0.7742, 0.6980, 0.7301, 0.7555, 0.7102]
r = stats.ttest_ind(b, a, equal_var=False)
ci = r.confidence_interval(0.95)
print("welch t", repr(r.statistic), "p", repr(r.pvalue), "df", repr(r.df), "ci", repr(ci.low), repr(ci.high))
for df in [1, 4, 9, 30, 7.5]:
    print("t_0.975", df, repr(stats.t.ppf(0.975, df)))
for t, df in [(0.5, 3), (-2.0, 7), (3.3, 12.4)]:
    print("cdf", t, df, repr(stats.t.cdf(t, df)))
m = np.mean(a); s = np.std(a, ddof=1); h = stats.t.ppf(0.975, len(a) - 1) * s / np.sqrt(len(a))
print("mean", repr(m), "sd", repr(s), "ci", repr(m - h), repr(m + h))
