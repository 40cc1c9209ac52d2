"""Feature building for the issue-4 feasibility study (NYC 2013 hourly, 24-h temperature forecast).

Everything at origin o uses only data at or before o (rolling/shift only backwards).
Targets T(o+h) are taken from the raw (non-interpolated) hourly grid.
"""
import os

import numpy as np
import pandas as pd

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'data', 'raw', 'nyc_asos_2013_hourly.csv')
STATIONS = ['EWR', 'JFK', 'LGA']
LEADS = list(range(1, 25))
TRAIN = ('2013-01-01', '2013-09-01')
CAL = ('2013-09-01', '2013-10-01')
TEST = ('2013-10-01', '2014-01-01')


def f2c(x):
    return (x - 32.0) * 5.0 / 9.0


def load_grid():
    d = pd.read_csv(DATA, na_values='NA')
    d['t'] = pd.to_datetime(d['time_hour'], utc=True)
    d['T'] = f2c(d['temp'])
    d['Td'] = f2c(d['dewp'])
    # documented glitches: wind 1048 mph -> missing
    d.loc[d['wind_speed'] > 100, ['wind_speed', 'wind_gust']] = np.nan
    grid = pd.date_range('2013-01-01T00:00Z', '2013-12-31T23:00Z', freq='h')
    out = {}
    for s in STATIONS:
        g = d[d.origin == s].set_index('t').reindex(grid)
        # isolated temperature spike (JFK 2013-05-09T02Z 13.1F between two 57F): treat as missing
        # (the reference's fallback has an outlier gate; a >10 degC jump out and back in 1 h)
        T = g['T']
        spike = ((T - T.shift(1)).abs() > 10) & ((T - T.shift(-1)).abs() > 10)
        if spike.any():
            print(s, 'spike removed at', list(T.index[spike]))
        g.loc[spike, ['T', 'Td', 'humid']] = np.nan
        out[s] = g
    return grid, out


def diurnal_profile(T):
    """D(hour-of-day) at each origin: mean of T at that UTC hour over the 28 previous days
    (days d-28..d-1, so strictly before the origin's day). Returns DataFrame idx x 24."""
    df = pd.DataFrame({'T': T.values, 'date': T.index.floor('D'), 'hod': T.index.hour}, index=T.index)
    piv = df.pivot_table(index='date', columns='hod', values='T', aggfunc='mean')
    days = pd.date_range(T.index[0].floor('D'), T.index[-1].floor('D'), freq='D')
    piv = piv.reindex(days)
    prof = piv.rolling(28, min_periods=7).mean().shift(1)  # previous 28 days
    prof = prof.ffill()  # early days
    prof = prof.bfill()  # first days of Jan (only affects the earliest train origins)
    return prof.reindex(T.index.floor('D')).set_axis(T.index)  # idx x 24


def annual_fit(T, idx):
    doy = idx.dayofyear.values + idx.hour.values / 24.0
    w = 2 * np.pi * doy / 365.25
    X = np.c_[np.ones_like(w), np.cos(w), np.sin(w)]
    m = (idx >= TRAIN[0]) & (idx < TRAIN[1]) & T.notna().values
    coef, *_ = np.linalg.lstsq(X[m], T.values[m], rcond=None)
    return coef


def clim(coef, idx):
    doy = idx.dayofyear.values + idx.hour.values / 24.0
    w = 2 * np.pi * doy / 365.25
    return coef[0] + coef[1] * np.cos(w) + coef[2] * np.sin(w)


def station_frame(g):
    """Origin-level features of one station. Inputs (not targets) forward-filled up to 3 h."""
    idx = g.index
    T = g['T']
    Tf = T.ffill(limit=3)
    Td = g['Td'].ffill(limit=3)
    P = g['pressure'].ffill(limit=3)
    H = g['humid'].ffill(limit=3)
    ws = g['wind_speed'].ffill(limit=3)
    wd = g['wind_dir']
    calm = (ws == 0) | wd.isna()
    rad = np.deg2rad(wd.fillna(0))
    u = np.where(calm, 0.0, -np.sin(rad))  # unit vector the wind blows towards (east +)
    v = np.where(calm, 0.0, -np.cos(rad))  # north +
    u = pd.Series(u, idx).where(ws.notna()).ffill(limit=3)
    v = pd.Series(v, idx).where(ws.notna()).ffill(limit=3)
    f = pd.DataFrame(index=idx)
    f['T0'] = T  # origin temperature (must be observed)
    for k in (1, 2, 3, 6, 12, 24):
        f[f'dT{k}'] = T - Tf.shift(k)
    f['mean24'] = Tf.rolling(24, min_periods=12).mean()
    f['daily_anom'] = T - f['mean24']
    f['range24'] = Tf.rolling(24, min_periods=12).max() - Tf.rolling(24, min_periods=12).min()
    f['humid'] = H
    f['dhumid3'] = H - H.shift(3)
    f['depr'] = T - Td
    for k in (1, 3, 12, 24):
        f[f'dP{k}'] = P - P.shift(k)
    f['wind'] = ws
    f['precip'] = g['precip'].fillna(0)
    f['precip6'] = g['precip'].fillna(0).rolling(6, min_periods=1).sum()
    hod = idx.hour.values
    f['hod_s'] = np.sin(2 * np.pi * hod / 24)
    f['hod_c'] = np.cos(2 * np.pi * hod / 24)
    # extra (experiment 2)
    x = pd.DataFrame(index=idx)
    x['u'] = u
    x['v'] = v
    x['uw'] = u * ws
    x['vw'] = v * ws
    x['visib'] = g['visib'].ffill(limit=3)
    x['logvis'] = np.log1p(x['visib'])
    x['Td0'] = Td
    for k in (1, 3, 6, 12, 24):
        x[f'dTd{k}'] = Td - Td.shift(k)
    x['P'] = P
    x['gust'] = g['wind_gust'].fillna(ws)
    # raw state for cross-station use
    raw = pd.DataFrame({'T': Tf, 'P': P, 'u': x['uw'], 'v': x['vw']}, index=idx)
    return f, x, raw


def build():
    grid, gs = load_grid()
    frames = []
    raws = {}
    per = {}
    for s in STATIONS:
        g = gs[s]
        f, x, raw = station_frame(g)
        raws[s] = raw
        per[s] = (g, f, x)
    rows = []
    for si, s in enumerate(STATIONS):
        g, f, x = per[s]
        idx = g.index
        T = g['T']
        prof = diurnal_profile(T)
        coef = annual_fit(T, idx)
        c0 = clim(coef, idx)
        Dmean = prof.mean(axis=1).values
        hod = idx.hour.values
        D_o = prof.values[np.arange(len(idx)), hod]
        base = pd.concat([f, x], axis=1)
        base['level_vs_clim'] = Dmean - c0
        base['day_vs_clim'] = f['mean24'].values - c0
        base['T0_minus_clim'] = T.values - c0
        # cross-station (experiment 3): other stations' state at o and 1/3/6-h changes
        for o in STATIONS:
            if o == s:
                continue
            r = raws[o]
            base[f'x_{o}_dT'] = r['T'] - f['T0']          # temperature difference to own
            base[f'x_{o}_dP'] = r['P'] - x['P']
            base[f'x_{o}_u'] = r['u']
            base[f'x_{o}_v'] = r['v']
            for k in (1, 3, 6):
                base[f'x_{o}_chT{k}'] = r['T'] - r['T'].shift(k)
                base[f'x_{o}_chP{k}'] = r['P'] - r['P'].shift(k)
                base[f'x_{o}_chu{k}'] = r['u'] - r['u'].shift(k)
                base[f'x_{o}_chv{k}'] = r['v'] - r['v'].shift(k)
        # generic, station-order-free cross features: mean of the two others
        others = [o for o in STATIONS if o != s]
        base['xo_dT'] = base[[f'x_{o}_dT' for o in others]].mean(axis=1)
        base['xo_dP'] = base[[f'x_{o}_dP' for o in others]].mean(axis=1)
        for k in (1, 3, 6):
            base[f'xo_chT{k}'] = base[[f'x_{o}_chT{k}' for o in others]].mean(axis=1)
            base[f'xo_chP{k}'] = base[[f'x_{o}_chP{k}' for o in others]].mean(axis=1)
        base['xo_u'] = base[[f'x_{o}_u' for o in others]].mean(axis=1)
        base['xo_v'] = base[[f'x_{o}_v' for o in others]].mean(axis=1)
        for o in STATIONS:
            base[f'st_{o}'] = float(o == s)
        base['station'] = s
        # per-lead columns
        Tv = T.values
        n = len(idx)
        lc = {}
        for h in LEADS:
            tgt = np.full(n, np.nan)
            tgt[:n - h] = Tv[h:]
            hv = (hod + h) % 24
            D_v = prof.values[np.arange(n), hv]
            cv = clim(coef, idx + pd.Timedelta(hours=h))
            yest = np.full(n, np.nan)
            yest[24 - h:] = T.ffill(limit=3).values[:n - (24 - h)] if h < 24 else T.ffill(limit=3).values
            lc[f'y_{h}'] = tgt - Tv
            lc[f'diur_{h}'] = D_v - D_o
            lc[f'cgap_{h}'] = cv + (D_v - Dmean) - Tv
            lc[f'yest_{h}'] = yest - Tv
            lc[f'vh_s_{h}'] = np.sin(2 * np.pi * hv / 24)
            lc[f'vh_c_{h}'] = np.cos(2 * np.pi * hv / 24)
        base = pd.concat([base, pd.DataFrame(lc, index=idx)], axis=1)
        base = base[T.notna().values]  # origins = hours with observed temperature
        rows.append(base)
    df = pd.concat(rows)
    df.index.name = 'o'
    return df
