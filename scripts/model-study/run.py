"""Run experiments 1-3 (+ small ablations). Usage: python run.py [exp names...]"""
import json
import sys
import time
import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.impute import SimpleImputer
import lightgbm as lgb
from feats import build, STATIONS, LEADS, TRAIN, CAL, TEST

OWN = ['dT1', 'dT2', 'dT3', 'dT6', 'dT12', 'dT24', 'daily_anom', 'range24', 'humid', 'dhumid3', 'depr',
       'dP1', 'dP3', 'dP12', 'dP24', 'wind', 'precip', 'hod_s', 'hod_c',
       'level_vs_clim', 'day_vs_clim', 'T0_minus_clim']
LEADF = ['diur', 'cgap', 'yest', 'vh_s', 'vh_c']  # + interactions built below
EXTRA = ['u', 'v', 'uw', 'vw', 'visib', 'logvis', 'dTd1', 'dTd3', 'dTd6', 'dTd12', 'dTd24', 'P', 'gust', 'precip6']
ONEHOT = ['st_EWR', 'st_JFK', 'st_LGA']
CROSS_MEAN = ['xo_dT', 'xo_dP', 'xo_chT1', 'xo_chT3', 'xo_chT6', 'xo_chP1', 'xo_chP3', 'xo_chP6', 'xo_u', 'xo_v']
CROSS_NAMED = []
for o in STATIONS:
    CROSS_NAMED += [f'x_{o}_dT', f'x_{o}_dP', f'x_{o}_u', f'x_{o}_v']
    for k in (1, 3, 6):
        CROSS_NAMED += [f'x_{o}_chT{k}', f'x_{o}_chP{k}', f'x_{o}_chu{k}', f'x_{o}_chv{k}']


def lead_X(df, h, cols):
    X = df[cols].copy()
    for c in LEADF:
        X[c] = df[f'{c}_{h}']
    X['diur_x_depr'] = X['diur'] * df['depr']
    X['diur_x_wind'] = X['diur'] * df['wind']
    X['diur_x_range'] = X['diur'] * df['range24']
    return X


def period(df, p):
    i = df.index
    return (i >= pd.Timestamp(p[0], tz='UTC')) & (i < pd.Timestamp(p[1], tz='UTC'))


def fit_predict(df, cols, kind, per_station=False, fillzero_cross=False):
    tr, ca, te = period(df, TRAIN), period(df, CAL), period(df, TEST)
    preds = {}
    t0 = time.time()
    groups = [(s, df['station'] == s) for s in STATIONS] if per_station else [('all', np.ones(len(df), bool))]
    for h in LEADS:
        y = df[f'y_{h}'].values
        X = lead_X(df, h, cols)
        if fillzero_cross:
            X[[c for c in X.columns if c.startswith('x_')]] = X[[c for c in X.columns if c.startswith('x_')]].fillna(0)
        p = np.full(len(df), np.nan)
        for _, gm in groups:
            gm = np.asarray(gm)
            mtr = tr & gm & ~np.isnan(y)
            mca = ca & gm & ~np.isnan(y)
            if kind == 'ridge':
                m = make_pipeline(SimpleImputer(strategy='mean', keep_empty_features=True), StandardScaler(), Ridge(alpha=10.0))
                m.fit(X[mtr], y[mtr])
            else:
                m = lgb.LGBMRegressor(n_estimators=2000, learning_rate=0.03, num_leaves=15, min_child_samples=40,
                                      subsample=0.8, subsample_freq=1, colsample_bytree=0.7, reg_lambda=1.0,
                                      objective='l1', n_jobs=2, verbose=-1)
                m.fit(X[mtr], y[mtr], eval_set=[(X[mca], y[mca])], eval_metric='l1',
                      callbacks=[lgb.early_stopping(100, verbose=False)])
            p[te & gm] = m.predict(X[te & gm])
        preds[h] = p
    return preds, time.time() - t0


def score(df, preds):
    te = period(df, TEST)
    res = {}
    for s in STATIONS:
        m = te & (df['station'] == s).values
        maes = []
        for h in LEADS:
            y = df[f'y_{h}'].values
            ok = m & ~np.isnan(y)
            maes.append(float(np.mean(np.abs(preds[h][ok] - y[ok]))))
        res[s] = maes
    return res


def baselines(df):
    pers = {h: np.zeros(len(df)) for h in LEADS}
    diur = {h: df[f'diur_{h}'].fillna(0).values for h in LEADS}
    return pers, diur


def summary(res):
    return {s: (np.mean(v), v[0], v[23]) for s, v in res.items()}


if __name__ == '__main__':
    t = time.time()
    df = build()
    print(f'features built in {time.time()-t:.1f}s, rows {len(df)}', flush=True)
    which = sys.argv[1:] or ['base', 'e1', 'e2r', 'e2g', 'e3r', 'e3g']
    E = {
        'e1': (OWN, 'ridge', {}),
        'e1_onehot': (OWN + ONEHOT, 'ridge', {}),
        'e2r': (OWN + EXTRA + ONEHOT, 'ridge', {}),
        'e2r_uv': (OWN + ['u', 'v', 'uw', 'vw'] + ONEHOT, 'ridge', {}),
        'e2r_vis': (OWN + ['visib', 'logvis'] + ONEHOT, 'ridge', {}),
        'e2r_dew': (OWN + ['dTd1', 'dTd3', 'dTd6', 'dTd12', 'dTd24'] + ONEHOT, 'ridge', {}),
        'e2g': (OWN + EXTRA + ONEHOT, 'lgbm', {}),
        'e1g': (OWN + ONEHOT, 'lgbm', {}),
        'e3r': (OWN + EXTRA + ONEHOT + CROSS_MEAN, 'ridge', {}),
        'e3r_named_ps': (OWN + EXTRA + CROSS_NAMED, 'ridge', {'per_station': True}),
        'e3r_crossonly': (OWN + ONEHOT + CROSS_MEAN, 'ridge', {}),
        'e3g': (OWN + EXTRA + ONEHOT + CROSS_NAMED + CROSS_MEAN, 'lgbm', {}),
        'e3g_crossonly': (OWN + ONEHOT + CROSS_NAMED + CROSS_MEAN, 'lgbm', {}),
    }
    out = {}
    try:
        out = json.load(open('results.json'))
    except Exception:
        pass
    for name in which:
        if name == 'base':
            pers, diur = baselines(df)
            out['persistence'] = {'res': score(df, pers), 'time': 0}
            out['pers+diurnal'] = {'res': score(df, diur), 'time': 0}
        else:
            cols, kind, kw = E[name]
            preds, dt = fit_predict(df, cols, kind, **kw)
            out[name] = {'res': score(df, preds), 'time': dt, 'nfeat': len(cols) + 8}
        json.dump(out, open('results.json', 'w'), indent=1)
        for k in ([name] if name != 'base' else ['persistence', 'pers+diurnal']):
            sm = summary(out[k]['res'])
            print(f"{k:16s} " + '  '.join(f"{s} {a:.3f}/{b:.3f}/{c:.3f}" for s, (a, b, c) in sm.items())
                  + f"   t={out[k]['time']:.1f}s", flush=True)
