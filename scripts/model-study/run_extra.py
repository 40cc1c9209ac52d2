"""Cheap ridge combinations after the main runs (same protocol as run.py)."""
import json, numpy as np
import run as R
from feats import build
df = build()
DEW = ['dTd1', 'dTd3', 'dTd6', 'dTd12', 'dTd24']
combos = {
 'r_dew+cross': (R.OWN + DEW + R.ONEHOT + R.CROSS_MEAN, {}),
 'r_dew+uv+cross': (R.OWN + DEW + ['u','v','uw','vw'] + R.ONEHOT + R.CROSS_MEAN, {}),
 'r_ps_dew+named': (R.OWN + DEW + R.CROSS_NAMED, {'per_station': True}),
}
out = json.load(open('results.json'))
for k, (cols, kw) in combos.items():
    p, dt = R.fit_predict(df, cols, 'ridge', **kw)
    res = R.score(df, p); out[k] = {'res': res, 'time': dt}
    print(f'{k:16s}', '  '.join(f'{s} {np.mean(m):.3f}/{m[0]:.3f}/{m[23]:.3f}' for s, m in res.items()), f't={dt:.1f}s')
json.dump(out, open('results_extra.json', 'w'), indent=1)
