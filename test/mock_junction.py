#!/usr/bin/env python3
"""Mock Junction (formerly Vital) REST API for the junction extension's tests and benchmarks.

Python 3.11 standard library only.  Listens on 127.0.0.1 only, HTTP/1.1 keep-alive.

    python3 test/mock_junction.py --port 0 --portfile /tmp/mock.port [--api-key K]
        [--management-key K] [--page-samples N] [--page-days N] [--density SEG=N]...
        [--dense] [--cache-mb N] [--verbose]

Data API (header X-Vital-API-Key): /v2/summary/*, /v2/timeseries/*, /v2/user*, /v2/introspect/*.
Management API (header X-Management-Key): /v1/org/{org}/team/{team}/{production|sandbox}/webhook*.
Control API (no auth, never logged, never faulted): /_mock/* -- see CONTROL_HELP below.

All synthetic data is a pure function of (user_id, resource, day, source, data_version), so
any two requests covering the same day return byte-identical samples/objects.
"""

import argparse
import base64
import binascii
import collections
import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import signal
import socket
import string
import sys
import threading
import time
import traceback
import uuid
import zlib
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

CONTROL_HELP = {
    "POST /_mock/faults": "{path_prefix, method?, repeat?, responses:[{status?, headers?, body?, "
                          "content_type?, delay_ms?, drop?, truncate?, template?, body_b64?, generate?, "
                          "chunked?}]} -> queue scripted responses. template: true replaces {api_key}, "
                          "{management_key} and {request_body} in body with what the request sent "
                          "(JSON-string-escaped); "
                          "body_b64: raw body bytes (e.g. invalid UTF-8); generate: {bytes, shape?: "
                          "samples|numbers} a valid JSON answer of that size; chunked: true sends "
                          "Transfer-Encoding: chunked without Content-Length",
    "GET /_mock/faults": "pending fault rules",
    "DELETE /_mock/faults": "clear pending faults",
    "POST /_mock/lab": "{orders: [ClientFacingOrder], results: {order_id: LabResultsRaw}} -> served by /v3/orders, "
                       "/v3/order/{id}, /v3/order/{id}/result",
    "POST /_mock/sense": "{user_id, query, table: {column: [values]}} -> served by "
                         "/aggregate/v1/user/{user_id}/continuous_query/{query}/result_table",
    "POST /_mock/reset": "clear faults, users, webhooks, counters, request log, caches; config back to CLI",
    "GET /_mock/requests": "last 1000 requests (?since=SEQ&limit=N&path_prefix=P)",
    "DELETE /_mock/requests": "clear the request log",
    "GET /_mock/stats": "request counts per path prefix / route / status",
    "GET /_mock/config": "current generation config",
    "POST /_mock/config": "{density:{seg:N}, dense:bool, page_samples, page_days, data_version, "
                          "refresh_limit, introspect_page_size, require_known_user}",
    "POST /_mock/users": "{count, prefix?} -> bulk-create users (client_user_id = prefix + i)",
    "GET /_mock/health": "{ok:true}",
}

NS = uuid.UUID("6f1c1f52-4c36-5a8e-9d7a-3b0e9d1c2a11")      # namespace of every generated uuid
TEAM_ID = str(uuid.uuid5(NS, "team"))
EPOCH_ORD = dt.date(1970, 1, 1).toordinal()
MAX_RANGE_DAYS = 3660
HMS = ["%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) for s in range(86400)]
DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# user-level time zones: (offset seconds, IANA name without DST)
TIME_ZONES = [(0, "UTC"), (3600, "Africa/Lagos"), (-18000, "America/Bogota"), (19800, "Asia/Kolkata")]

PROVIDER_NAMES = {
    "oura": "Oura", "apple_health_kit": "Apple HealthKit", "withings": "Withings",
    "freestyle_libre": "Freestyle Libre", "garmin": "Garmin",
}
# default connections of every created user; freestyle_libre is in status "error"
DEFAULT_CONNECTIONS = ["oura", "apple_health_kit", "withings", "freestyle_libre", "garmin"]
ERROR_PROVIDER = "freestyle_libre"

SPORTS = [(1, "Running", "running"), (2, "Cycling", "cycling"),
          (3, "Swimming", "swimming"), (4, "Walking", "walking")]


# --------------------------------------------------------------------------- helpers

def seed_of(*parts):
    """Stable 64-bit seed of the parts (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


def det_uuid(*parts):
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


def iso(epoch):
    """UTC timestamp YYYY-mm-ddTHH:MM:SS+00:00 of integer epoch seconds."""
    epoch = int(epoch)
    d = dt.date.fromordinal(EPOCH_ORD + epoch // 86400)
    return "%sT%s+00:00" % (d.isoformat(), HMS[epoch % 86400])


def now_iso():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def day_str(d):
    return dt.date.fromordinal(d).isoformat()


def day_epoch(d):
    return (d - EPOCH_ORD) * 86400


def b64url(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)).decode()


class ApiError(Exception):
    """Raised by handlers: becomes a FastAPI-style {"detail": ...} response."""

    def __init__(self, status, detail, headers=None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def validation_error(loc, msg, typ="value_error", inp=None):
    return ApiError(422, [{"type": typ, "loc": list(loc), "msg": msg, "input": inp}])


def parse_uuid(value, loc):
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise validation_error(loc, "Input should be a valid UUID", "uuid_parsing", value)


def parse_when(value, loc, end=False):
    """YYYY-MM-DD or ISO datetime -> epoch seconds (bare end date = 23:59:59)."""
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return day_epoch(d.toordinal()) + (86399 if end else 0)
        # an unencoded "+" in a query string arrives as a space
        t = dt.datetime.fromisoformat(value.replace(" ", "+"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return int(t.timestamp())
    except (ValueError, TypeError):
        raise validation_error(loc, "Input should be a valid date or datetime", "datetime_from_date_parsing", value)


def parse_int(query, name, default, lo=None, hi=None):
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise validation_error(("query", name), "Input should be a valid integer", "int_parsing", raw)
    if lo is not None and v < lo:
        raise validation_error(("query", name), "Input should be greater than or equal to %d" % lo,
                               "greater_than_equal", raw)
    if hi is not None and v > hi:
        raise validation_error(("query", name), "Input should be less than or equal to %d" % hi,
                               "less_than_equal", raw)
    return v


def date_range(query):
    """(start_epoch, end_epoch) from start_date (required) / end_date (default: now)."""
    if not query.get("start_date"):
        raise validation_error(("query", "start_date"), "Field required", "missing", None)
    start = parse_when(query["start_date"], ("query", "start_date"))
    if query.get("end_date"):
        end = parse_when(query["end_date"], ("query", "end_date"), end=True)
    else:
        end = int(time.time())
    if end - start > MAX_RANGE_DAYS * 86400:
        raise validation_error(("query", "end_date"), "Date range longer than %d days" % MAX_RANGE_DAYS)
    return start, end


def user_tz(user_id):
    return TIME_ZONES[seed_of(user_id, "tz") % len(TIME_ZONES)]


# --------------------------------------------------------------------------- timeseries catalogue

AHK_WATCH = ("apple_health_kit", "watch")
AHK_PHONE = ("apple_health_kit", "phone")
AHK_APP = ("apple_health_kit", "app")
OURA = ("oura", "ring")
W_SCALE = ("withings", "scale")
W_CUFF = ("withings", "cuff")
LIBRE = ("freestyle_libre", "automatic")
GARMIN = ("garmin", "watch")

# diurnal activity curve in [0,1] per UTC hour (low at night)
CURVE = [0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.25, 0.5, 0.6, 0.55, 0.5, 0.55,
         0.65, 0.55, 0.5, 0.5, 0.6, 0.8, 0.9, 0.7, 0.5, 0.35, 0.2, 0.1]


class Seg:
    """One grouped-timeseries segment: how its samples are shaped and how many per day."""

    def __init__(self, name, unit, interval, density, lo, hi, dec, sources, event=None,
                 types=None, type_choice=None, extra=None, curve=False, floating=False,
                 kind="num", workout=False):
        self.name = name               # REST segment
        self.event = event or name     # webhook resource name
        self.unit = unit
        self.interval = interval       # has start/end
        self.density = density         # slots per day per source
        self.lo, self.hi, self.dec = lo, hi, dec
        self.sources = sources         # [(provider, source_type)]
        self.types = types             # every slot emits one sample per type (same timestamp)
        self.type_choice = type_choice  # one type per sample, chosen deterministically
        self.extra = extra or {}       # field -> constant or list of choices
        self.curve = curve
        self.floating = floating       # libre floating time: timezone_offset null
        self.kind = kind               # num | bp | note
        self.workout = workout         # source carries the day's workout_id / sport


SEGMENTS = {s.name: s for s in [
    Seg("heartrate", "bpm", False, 288, 48, 130, 0, [AHK_WATCH], curve=True),
    Seg("calories_active", "kcal", True, 96, 0, 15, 1, [AHK_WATCH, OURA], curve=True),
    Seg("calories_basal", "kcal", False, 24, 50, 80, 1, [AHK_WATCH]),
    Seg("steps", "count", True, 96, 0, 400, 0, [AHK_PHONE, AHK_WATCH], curve=True),
    Seg("distance", "m", True, 96, 0, 300, 1, [AHK_PHONE], curve=True),
    Seg("floors_climbed", "count", False, 8, 0, 3, 0, [AHK_PHONE]),
    Seg("blood_oxygen", "%", False, 24, 92, 100, 0, [AHK_WATCH]),
    Seg("blood_pressure", "mmHg", False, 2, 0, 0, 0, [W_CUFF], kind="bp"),
    Seg("body_weight", "kg", False, 1, 60, 90, 2, [W_SCALE], event="weight"),
    Seg("body_fat", "%", False, 1, 15, 30, 1, [W_SCALE], event="fat"),
    Seg("body_temperature", "°C", True, 1, 36.0, 37.2, 2, [OURA], extra={"sensor_location": "finger"}),
    Seg("body_temperature_delta", "°C", True, 1, -0.5, 0.5, 2, [OURA], extra={"sensor_location": "finger"}),
    Seg("caffeine", "g", True, 2, 0.05, 0.2, 3, [AHK_APP]),
    Seg("cholesterol", "mmol/L", False, 1, 1, 6, 2, [AHK_APP], types=["ldl", "hdl", "total", "triglycerides"]),
    Seg("glucose", "mmol/L", False, 96, 3.9, 10, 1, [LIBRE], floating=True, curve=True),
    Seg("hrv", "rmssd", False, 24, 20, 90, 1, [AHK_WATCH]),
    Seg("ige", "FSU", False, 1, 0.1, 5, 2, [AHK_APP], types=["egg_white", "peanut"]),
    Seg("igg", "FSU", False, 1, 0.1, 5, 2, [AHK_APP], types=["egg_white", "peanut"]),
    Seg("mindfulness_minutes", "minutes", True, 1, 5, 20, 0, [AHK_APP]),
    Seg("respiratory_rate", "bpm", False, 24, 12, 20, 1, [AHK_WATCH]),
    Seg("stress_level", "%", False, 24, 0, 100, 0, [GARMIN], curve=True),
    Seg("vo2_max", "mL/kg/min", True, 1, 35, 50, 1, [AHK_WATCH]),
    Seg("water", "ml", False, 4, 150, 500, 0, [AHK_APP]),
    Seg("electrocardiogram_voltage", "mV", False, 50, -0.5, 1.5, 3, [AHK_WATCH], type_choice=["lead_1"]),
    Seg("afib_burden", "%", True, 1, 0, 3, 1, [AHK_WATCH]),
    Seg("heart_rate_alert", "count", True, 1, 1, 1, 0, [AHK_WATCH],
        type_choice=["low_heart_rate", "high_heart_rate", "irregular_rhythm"]),
    Seg("workout_duration", "min", True, 1, 20, 90, 0, [GARMIN], extra={"intensity": ["low", "medium", "high"]}),
    Seg("insulin_injection", "unit", True, 3, 1, 12, 1, [AHK_APP], type_choice=["rapid_acting", "long_acting"],
        extra={"delivery_mode": ["basal", "bolus"], "delivery_form": "standard",
               "bolus_purpose": ["meal", "correction", "mixed", "unknown"]}),
    Seg("carbohydrates", "g", True, 3, 10, 80, 0, [AHK_APP]),
    Seg("note", "text", True, 1, 0, 0, 0, [AHK_APP], kind="note", extra={"tags": [["food"], ["exercise"]]}),
    Seg("stand_hour", "count", True, 12, 1, 1, 0, [AHK_WATCH], type_choice=["stood", "idle"]),
    Seg("stand_duration", "min", True, 24, 0, 10, 0, [AHK_WATCH], curve=True),
    Seg("sleep_apnea_alert", "count", True, 1, 1, 1, 0, [AHK_WATCH]),
    Seg("sleep_breathing_disturbance", "count", True, 1, 0, 5, 0, [AHK_WATCH],
        type_choice=["elevated", "not_elevated"]),
    Seg("wheelchair_push", "count", True, 4, 0, 100, 0, [AHK_WATCH]),
    Seg("forced_expiratory_volume_1", "L", True, 1, 2.5, 4, 2, [AHK_APP]),
    Seg("forced_vital_capacity", "L", True, 1, 3.5, 5, 2, [AHK_APP]),
    Seg("peak_expiratory_flow_rate", "L/min", True, 1, 350, 600, 0, [AHK_APP]),
    Seg("inhaler_usage", "count", True, 1, 1, 2, 0, [AHK_APP]),
    Seg("fall", "count", True, 1, 1, 1, 0, [AHK_WATCH]),
    Seg("uv_exposure", "index", True, 4, 0, 8, 1, [AHK_WATCH]),
    Seg("daylight_exposure", "min", True, 24, 0, 30, 0, [AHK_WATCH], curve=True),
    Seg("handwashing", "count", True, 5, 1, 1, 0, [AHK_WATCH]),
    Seg("basal_body_temperature", "°C", True, 1, 36.1, 36.8, 2, [AHK_APP]),
    Seg("body_mass_index", "index", True, 1, 20, 27, 1, [W_SCALE]),
    Seg("lean_body_mass", "kg", True, 1, 45, 65, 1, [W_SCALE]),
    Seg("waist_circumference", "cm", True, 1, 75, 95, 1, [AHK_APP]),
    Seg("heart_rate_recovery_one_minute", "count", True, 1, 15, 40, 0, [AHK_WATCH]),
    Seg("workout_distance", "m", True, 20, 50, 500, 1, [GARMIN], workout=True),
    Seg("workout_swimming_stroke", "count", True, 10, 10, 40, 0, [GARMIN], workout=True),
    Seg("hypnogram", "stage", False, 96, 1, 4, 0, [OURA]),     # deprecated REST-only segment
]}
DENSE_HEARTRATE = 10000

SUMMARY_KEYS = {"activity": "activity", "sleep": "sleep", "sleep_cycle": "sleep_cycle",
                "workouts": "workouts", "body": "body", "meal": "meals",
                "menstrual_cycle": "menstrual_cycle", "electrocardiogram": "electrocardiogram",
                "profile": None}
SUMMARY_SOURCES = {"activity": OURA, "sleep": OURA, "sleep_cycle": OURA, "workouts": GARMIN,
                   "body": W_SCALE, "profile": OURA, "meal": AHK_APP,
                   "menstrual_cycle": AHK_PHONE, "electrocardiogram": AHK_WATCH}


def provider_resources(provider):
    """Resource names (event names) the mock produces for a provider."""
    out = [r for r, s in SUMMARY_SOURCES.items() if s[0] == provider]
    if provider == "garmin":
        out.append("workout_stream")
    out += [s.event for s in SEGMENTS.values() if s.name != "hypnogram" and any(p == provider for p, _ in s.sources)]
    return out


# --------------------------------------------------------------------------- summaries

def summary_source(provider, stype, app_id=None):
    return {"provider": provider, "type": stype, "app_id": app_id, "device_id": None}


def stamps(user_id, resource, d, version):
    """Deterministic created_at / updated_at: created 02:00 the next day, updated +version hours."""
    base = day_epoch(d) + 86400 + 7200 + seed_of(user_id, resource, d) % 1800
    return iso(base), iso(base + (version - 1) * 3600 + (seed_of(user_id, resource, d, "u") % 60))


def sleep_core(user_id, d, version):
    r = random.Random(seed_of(user_id, "sleep", d, version))
    off, _ = user_tz(user_id)
    # local 22:30 +- 45 min on the previous evening, expressed in UTC
    start = day_epoch(d) - 5400 - off + r.randint(-2700, 2700)
    total_span = r.randint(6 * 3600, 9 * 3600)
    return start, start + total_span, r


def workout_core(user_id, d, version):
    r = random.Random(seed_of(user_id, "workouts", d))
    off, _ = user_tz(user_id)
    # local 16:00-16:30 start, at most 90 min: always ends before midnight UTC
    start = day_epoch(d) + 16 * 3600 - off + r.randint(0, 1800)
    duration = r.randint(30, 90) * 60
    sport = SPORTS[r.randrange(len(SPORTS))]
    return start, duration, sport


class SummaryGen:
    """Builds one summary object per day for a (user, resource)."""

    def __init__(self, mock):
        self.mock = mock

    def build(self, resource, user_id, d, version):
        prov, stype = SUMMARY_SOURCES[resource]
        app_id = "com.apple.Health" if prov == "apple_health_kit" else None
        src = summary_source(prov, stype, app_id)
        obj = {"id": det_uuid(user_id, resource, d, prov), "user_id": user_id,
               "calendar_date": day_str(d)}
        r = random.Random(seed_of(user_id, resource, d, prov, version))
        off, tzname = user_tz(user_id)
        getattr(self, "_" + resource)(obj, user_id, d, version, r, off, tzname, src)
        obj["source"] = src
        obj["created_at"], obj["updated_at"] = stamps(user_id, resource, d, version)
        return obj

    def _activity(self, o, user_id, d, version, r, off, tz, src):
        steps = r.randint(3000, 15000)
        active = round(steps * 0.04 + r.uniform(50, 150), 1)
        o.update({
            "date": iso(day_epoch(d)), "calories_total": round(active + r.uniform(1500, 1900), 1),
            "calories_active": active, "steps": steps, "distance": round(steps * 0.75, 1),
            "daily_movement": round(steps * 0.75, 1), "low": float(r.randint(60, 240)),
            "medium": float(r.randint(10, 90)), "high": float(r.randint(0, 45)),
            "floors_climbed": r.randint(0, 25), "time_zone": tz, "timezone_offset": off,
            "heart_rate": {"avg_bpm": r.randint(65, 80), "min_bpm": r.randint(45, 55),
                           "max_bpm": r.randint(140, 180), "resting_bpm": r.randint(50, 62),
                           "avg_walking_bpm": r.randint(85, 105)},
            "wheelchair_use": None, "wheelchair_push": None})

    def _sleep(self, o, user_id, d, version, r, off, tz, src):
        start, end, r2 = sleep_core(user_id, d, version)
        total = end - start
        latency = r2.randint(120, 1500)
        awake = r2.randint(600, 3600)
        asleep = total - awake
        deep = int(asleep * r2.uniform(0.15, 0.25))
        rem = int(asleep * r2.uniform(0.18, 0.25))
        light = asleep - deep - rem
        o.update({
            "date": iso(day_epoch(d)), "bedtime_start": iso(start), "bedtime_stop": iso(end),
            "type": "long_sleep", "timezone_offset": off, "duration": total, "total": asleep,
            "awake": awake, "light": light, "rem": rem, "deep": deep,
            "score": r2.randint(55, 95), "recovery_readiness_score": r2.randint(40, 95),
            "hr_lowest": r2.randint(42, 55), "hr_average": r2.randint(52, 65), "hr_resting": r2.randint(45, 60),
            "efficiency": round(100.0 * asleep / total, 1), "latency": latency,
            "temperature_delta": round(r2.uniform(-0.5, 0.5), 2), "skin_temperature": round(r2.uniform(33, 35.5), 2),
            "hr_dip": round(r2.uniform(5, 25), 1), "state": "confirmed",
            "average_hrv": round(r2.uniform(20, 90), 1), "respiratory_rate": round(r2.uniform(12, 18), 1),
            "sleep_stream": None})
        self.mock.remember_sleep(o["id"], user_id, start, end)

    def _sleep_cycle(self, o, user_id, d, version, r, off, tz, src):
        start, end, _ = sleep_core(user_id, d, version)
        starts, ends, types = [], [], []
        t = 0
        i = 0
        stage_cycle = [2, 1, 2, 3, 4]
        while t < end - start:
            length = min(1800 + (seed_of(user_id, d, i) % 1200), end - start - t)
            starts.append(t)
            ends.append(t + length)
            types.append(stage_cycle[i % len(stage_cycle)])
            t += length
            i += 1
        o.update({
            "sleep_id": det_uuid(user_id, "sleep", d, src["provider"]),
            "session_start": iso(start), "session_end": iso(end),
            "stage_start_offset_second": starts, "stage_end_offset_second": ends, "stage_type": types,
            "time_zone": tz, "source_provider": src["provider"], "source_type": src["type"],
            "source_app_id": src["app_id"], "source_device_id": None})

    def _workouts(self, o, user_id, d, version, r, off, tz, src):
        start, duration, (sid, sname, sslug) = workout_core(user_id, d, version)
        dist = round(duration * r.uniform(2.0, 3.5), 1) if sslug != "swimming" else round(duration * 0.6, 1)
        zones = [r.randint(0, 600) for _ in range(6)]
        o.update({
            "title": "%s %s" % ("Evening", sname), "time_start": iso(start), "time_end": iso(start + duration),
            "timezone_offset": off, "average_hr": r.randint(110, 150), "max_hr": r.randint(155, 190),
            "distance": dist, "calories": round(duration / 60 * r.uniform(7, 12), 1),
            "sport": {"id": sid, "name": sname, "slug": sslug}, "hr_zones": zones,
            "moving_time": duration - r.randint(0, 300),
            "total_elevation_gain": round(r.uniform(0, 200), 1), "elev_high": round(r.uniform(100, 300), 1),
            "elev_low": round(r.uniform(0, 100), 1), "average_speed": round(dist / duration, 2),
            "max_speed": round(dist / duration * 1.6, 2), "average_watts": None, "device_watts": None,
            "max_watts": None, "weighted_average_watts": None,
            "steps": r.randint(3000, 12000) if sslug in ("running", "walking") else None,
            "map": None, "provider_id": "garmin-%d" % (seed_of(user_id, d) % 10 ** 10)})
        self.mock.remember_workout(o["id"], user_id, start, duration, sslug)

    def _body(self, o, user_id, d, version, r, off, tz, src):
        w = round(r.uniform(60, 90), 2)
        o.update({
            "date": iso(day_epoch(d)), "weight": w, "fat": round(r.uniform(15, 30), 1),
            "water_percentage": round(r.uniform(50, 60), 1), "muscle_mass_percentage": round(r.uniform(30, 45), 1),
            "visceral_fat_index": round(r.uniform(3, 12), 1), "bone_mass_percentage": round(r.uniform(3, 5), 1),
            "body_mass_index": round(w / 1.78 ** 2, 1), "lean_body_mass_kilogram": round(w * 0.78, 1),
            "waist_circumference_centimeter": round(r.uniform(75, 95), 1)})

    def _meal(self, o, user_id, d, version, r, off, tz, src):
        name = ["Breakfast", "Lunch", "Dinner"][seed_of(user_id, "meal", d) % 3]
        carbs, protein, fat = r.randint(20, 90), r.randint(10, 50), r.randint(5, 40)
        energy = carbs * 4 + protein * 4 + fat * 9
        macros = {"carbs": float(carbs), "protein": float(protein),
                  "fats": {"total": float(fat), "saturated": round(fat * 0.3, 1),
                           "monounsaturated": round(fat * 0.4, 1), "polyunsaturated": round(fat * 0.2, 1),
                           "omega3": None, "omega6": None},
                  "alcohol": 0.0, "water": float(r.randint(50, 400)), "fibre": float(r.randint(2, 12)),
                  "sugar": float(r.randint(2, 30)), "cholesterol": float(r.randint(0, 200))}
        o.update({
            "timestamp": iso(day_epoch(d) + 12 * 3600 - off), "name": name,
            "energy": {"unit": "kcal", "value": float(energy)}, "macros": macros,
            "micros": {"minerals": {"sodium": float(r.randint(200, 1500))}},
            "data": {"item-%d" % (seed_of(user_id, d) % 1000): {"name": "Synthetic food", "energy":
                     {"unit": "kcal", "value": float(energy)}, "macros": {"carbs": float(carbs)}}},
            "provider_id": o["id"], "priority_id": 1, "source_id": 15,
            "source_app_id": src["app_id"], "source_device_id": None})

    def _menstrual_cycle(self, o, user_id, d, version, r, off, tz, src):
        flows = ["heavy", "medium", "medium", "light", "light"]
        o.update({
            "period_start": day_str(d), "period_end": day_str(d + 4), "cycle_end": day_str(d + 27),
            "is_predicted": False,
            "menstrual_flow": [{"date": day_str(d + i), "flow": f} for i, f in enumerate(flows)],
            "cervical_mucus": [], "intermenstrual_bleeding": [], "contraceptive": [],
            "detected_deviations": [], "ovulation_test": [], "home_pregnancy_test": [],
            "home_progesterone_test": [], "sexual_activity": [],
            "basal_body_temperature": [{"date": day_str(d), "value": round(r.uniform(36.1, 36.8), 2)}],
            "source_provider": src["provider"], "source_type": src["type"],
            "source_app_id": src["app_id"], "source_device_id": None})

    def _electrocardiogram(self, o, user_id, d, version, r, off, tz, src):
        start = day_epoch(d) + 9 * 3600 - off + r.randint(0, 3600)
        cls = ["sinus_rhythm", "sinus_rhythm", "sinus_rhythm", "atrial_fibrillation", "inconclusive"][r.randrange(5)]
        o.update({
            "session_start": iso(start), "session_end": iso(start + 30), "voltage_sample_count": 15360,
            "heart_rate_mean": r.randint(60, 95), "sampling_frequency_hz": 512.0, "classification": cls,
            "inconclusive_cause": "poor_reading" if cls == "inconclusive" else None,
            "algorithm_version": "2", "time_zone": tz,
            "source_provider": src["provider"], "source_type": src["type"],
            "source_app_id": src["app_id"], "source_device_id": None, "source_device_model": "Watch7,1"})

    def profile(self, user_id, version):
        prov, stype = SUMMARY_SOURCES["profile"]
        r = random.Random(seed_of(user_id, "profile", prov, version))
        sex = ["female", "male"][seed_of(user_id, "sex") % 2]
        created, updated = stamps(user_id, "profile", EPOCH_ORD + 19723, version)   # fixed: 2024-01-01
        return {"id": det_uuid(user_id, "profile", prov), "user_id": user_id, "height": r.randint(155, 195),
                "birth_date": day_str(dt.date(1960, 1, 1).toordinal() + seed_of(user_id, "bd") % 15000),
                "wheelchair_use": False, "gender": sex, "sex": sex,
                "source": summary_source(prov, stype), "created_at": created, "updated_at": updated}


# --------------------------------------------------------------------------- timeseries pages

class LRU:
    """Thread-safe LRU keyed cache bounded by total cost."""

    def __init__(self, max_cost):
        self.max_cost = max_cost
        self.cost = 0
        self.items = collections.OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self.lock:
            v = self.items.get(key)
            if v is None:
                self.misses += 1
                return None
            self.items.move_to_end(key)
            self.hits += 1
            return v[0]

    def put(self, key, value, cost):
        if cost > self.max_cost:
            return
        with self.lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.cost -= old[1]
            self.items[key] = (value, cost)
            self.cost += cost
            while self.cost > self.max_cost and self.items:
                _, (_, c) = self.items.popitem(last=False)
                self.cost -= c

    def clear(self):
        with self.lock:
            self.items.clear()
            self.cost = 0
            self.hits = self.misses = 0


def ts_source_json(provider, stype, workout_id=None, sport=None):
    return DUMPS({"provider": provider, "type": stype, "app_id": None, "device_id": None,
                  "sport": sport, "workout_id": workout_id})


def fmt_num(v, dec):
    return str(int(round(v))) if dec == 0 else "%.*f" % (dec, v)


def gen_day(seg, user_id, d, src_idx, version, density):
    """Samples of one source for one day: (source_json, provider, secs[], fragments[])."""
    provider, stype = seg.sources[src_idx]
    if seg.workout:
        start, duration, (_, _, sport) = workout_core(user_id, d, version)
        wid = det_uuid(user_id, "workouts", d, provider)
        src_json = ts_source_json(provider, stype, wid, sport)
        # samples spread over the workout's own time span
        base = start - day_epoch(d)
        slots = [min(86399, base + (i * duration) // density) for i in range(density)]
        ends = [min(base + ((i + 1) * duration) // density, 86400) for i in range(density)]
    else:
        src_json = ts_source_json(provider, stype)
        if density <= 24:
            half = (86400 // density) // 2
            slots = [(i * 86400) // density + half for i in range(density)]
            ends = [s + min(86400 // density, 900) for s in slots]
        else:
            slots = [(i * 86400) // density for i in range(density)]
            ends = slots[1:] + [86400]
    tzo = "null" if seg.floating else str(user_tz(user_id)[0])
    date = day_str(d)
    unit = DUMPS(seg.unit)
    types = seg.types or [None]
    n = len(slots) * len(types)
    rnd = random.Random(seed_of(user_id, seg.name, d, provider, stype, version))
    rv = array("H", rnd.randbytes(2 * n))
    if sys.byteorder != "little":
        rv.byteswap()
    lo, span, dec = seg.lo, seg.hi - seg.lo, seg.dec
    d0 = day_epoch(d)
    # time strings
    if seg.interval:
        e_strs = [("%sT%s+00:00" % (date, HMS[e])) if e < 86400 else iso(d0 + e) for e in ends]
    secs, frags = [], []
    head = '{"timestamp":"%sT' % date
    if seg.kind == "num" and not seg.types and not seg.type_choice and not seg.extra and not seg.interval:
        # fast path (heartrate, glucose, ...): one format per sample
        tail = '+00:00","timezone_offset":%s,"type":null,"unit":%s,"value":' % (tzo, unit)
        hours = [s // 3600 for s in slots]
        if seg.curve:
            base, k = [lo + span * 0.55 * c for c in CURVE], 0.45 * span / 65535.0
        else:
            base, k = [lo] * 24, span / 65535.0
        hms = HMS
        if dec == 0 and lo >= 0:
            # integer values through a lookup table of "<n>}" strings (rounding folded into the base)
            vs = [str(i) + "}" for i in range(int(seg.hi) + 2)]
            b = [x + 0.5 for x in base]
            frags = [f"{head}{hms[s]}{tail}{vs[int(b[h] + k * r)]}" for s, h, r in zip(slots, hours, rv)]
        else:
            spec = ".%df" % dec
            frags = [f"{head}{hms[s]}{tail}{base[h] + k * r:{spec}}}}" for s, h, r in zip(slots, hours, rv)]
        return src_json, provider, slots, frags
    k = 0
    for i, s in enumerate(slots):
        ts = "%sT%s+00:00" % (date, HMS[s])
        for t in types:
            r = rv[k]
            k += 1
            frac = r / 65535.0
            if seg.curve:
                v = lo + span * (0.55 * CURVE[s // 3600] + 0.45 * frac)
            else:
                v = lo + span * frac
            typ = t if t is not None else (seg.type_choice[r % len(seg.type_choice)] if seg.type_choice else None)
            parts = ['{"timestamp":"', ts, '"']
            if seg.interval:
                parts += [',"start":"', ts, '","end":"', e_strs[i], '"']
            parts += [',"timezone_offset":', tzo, ',"type":', DUMPS(typ) if typ else "null", ',"unit":', unit]
            if seg.kind == "bp":
                parts += [',"systolic":', str(105 + r % 36), ',"diastolic":', str(65 + (r >> 6) % 26)]
            elif seg.kind == "note":
                parts += [',"value":', DUMPS("synthetic note %d" % (r % 1000))]
            else:
                parts += [',"value":', fmt_num(v, dec)]
            for fname, fval in seg.extra.items():
                if isinstance(fval, list):
                    fval = fval[(r >> 3) % len(fval)]
                parts += [',', DUMPS(fname), ':', DUMPS(fval)]
            parts.append("}")
            secs.append(s)
            frags.append("".join(parts))
    return src_json, provider, secs, frags


class TimeseriesPager:
    """Cursor paging over the samples of a range; a page ends at a day boundary unless one day
    alone exceeds page_samples, and never covers more than page_days days."""

    def __init__(self, mock):
        self.mock = mock
        self.day_cache = LRU(3_000_000)       # cost = samples

    def day_chunks(self, seg, user_id, d, version, density, provider):
        key = (seg.name, user_id, d, version, density, provider)
        v = self.day_cache.get(key)
        if v is None:
            v = [gen_day(seg, user_id, d, i, version, density)
                 for i, (p, _) in enumerate(seg.sources) if not provider or p == provider]
            self.day_cache.put(key, v, sum(len(c[3]) for c in v) + 1)
        return v

    @staticmethod
    def clip(chunks, lo, hi):
        """Restrict a day's chunks to seconds-of-day in [lo, hi]."""
        out = []
        for src_json, prov, secs, frags in chunks:
            keep = [(s, f) for s, f in zip(secs, frags) if lo <= s <= hi]
            out.append((src_json, prov, [s for s, _ in keep], [f for _, f in keep]))
        return out

    def page(self, seg, user_id, start, end, provider, cursor, cfg):
        """Body bytes and sample count of one page."""
        density = cfg["density"].get(seg.name, seg.density)
        version = cfg["data_version"]
        page_samples, page_days = cfg["page_samples"], cfg["page_days"]
        qkey = "%s|%s|%d|%d|%s" % (user_id, seg.name, start, end, provider)
        qhash = "%08x" % zlib.crc32(qkey.encode())
        first, last = (start // 86400) + EPOCH_ORD, (end // 86400) + EPOCH_ORD
        if cursor:
            try:
                d, off, h = unb64url(cursor).split(".")
                d, off = int(d), int(off)
                if h != qhash or not first <= d <= last or off < 0:
                    raise ValueError
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise validation_error(("query", "next_cursor"), "Invalid cursor", "value_error", cursor)
        else:
            d, off = first, 0
        ckey = (qkey, d, off, version, density, page_samples, page_days)
        cached = self.mock.page_cache.get(ckey)
        if cached is not None:
            return cached
        groups = collections.OrderedDict()      # source_json -> (provider, [fragment lists])
        taken = 0
        days = 0
        if start > end or (provider and not any(p == provider for p, _ in seg.sources)):
            d = last + 1
        while d <= last:
            chunks = self.day_chunks(seg, user_id, d, version, density, provider)
            d0 = day_epoch(d)
            if start > d0 or end < d0 + 86399:
                chunks = self.clip(chunks, max(0, start - d0), min(86399, end - d0))
            total = sum(len(c[3]) for c in chunks)
            if taken > 0 and taken + total > page_samples:
                break
            room = page_samples - taken
            lo, hi = off, min(total, off + room)
            # take [lo, hi) of the day's flattened (source-ordered) samples
            pos = 0
            for src_json, prov, _, frags in chunks:
                a, b = max(lo - pos, 0), min(hi - pos, len(frags))
                if a < b:
                    groups.setdefault(src_json, (prov, []))[1].append(frags[a:b] if (a, b) != (0, len(frags)) else frags)
                pos += len(frags)
            taken += hi - lo
            if hi < total:
                off = hi
                break
            d, off = d + 1, 0
            days += 1
            if days >= page_days:
                break
        next_cursor = b64url("%d.%d.%s" % (d, off, qhash)) if d <= last else None
        by_provider = collections.OrderedDict()
        for src_json, (prov, lists) in groups.items():
            data = ",".join(",".join(fl) for fl in lists)
            by_provider.setdefault(prov, []).append('{"source":%s,"data":[%s]}' % (src_json, data))
        nc = DUMPS(next_cursor)
        body = ('{"groups":{%s},"next_cursor":%s,"next":%s}' % (
            ",".join('"%s":[%s]' % (p, ",".join(g)) for p, g in by_provider.items()), nc, nc)).encode()
        result = (body, taken)
        self.mock.page_cache.put(ckey, result, len(body) + 200)
        return result


# --------------------------------------------------------------------------- the mock's state

def gen_ep_id():
    alphabet = string.ascii_letters + string.digits
    return "ep_" + "".join(secrets.choice(alphabet) for _ in range(27))


def generated_json(nbytes, shape="samples"):
    """A valid JSON document of exactly nbytes bytes (cached): an object holding an array of
    timeseries-like samples ("samples") or of one-digit numbers ("numbers", the most elements
    per byte), padded with spaces to the size."""
    key = (nbytes, shape)
    hit = _GENERATED.get(key)
    if hit is not None:
        return hit
    if shape == "numbers":
        head, item, tail = b'{"data":[', b"7,", b"7]}"
    else:
        head, tail = b'{"data":[', b']}'
        item = (b'{"timestamp":"2024-01-01T00:00:00+00:00","value":72.0,"type":"automatic",'
                b'"unit":"bpm","timezone_offset":0},')
    n = max(0, (nbytes - len(head) - len(tail) - (len(b"7") if shape == "numbers" else 0)) // len(item))
    if shape == "numbers":
        body = head + item * n + tail
    else:
        body = head + (item * n)[:-1] + tail if n else head + tail
    if len(body) > nbytes:
        body = b"[]"
    body += b" " * (nbytes - len(body))
    _GENERATED.clear()
    _GENERATED[key] = body
    return body


_GENERATED = {}


def gen_secret():
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def valid_secret(s):
    if not isinstance(s, str) or not s.startswith("whsec_"):
        return False
    try:
        raw = base64.b64decode(s[6:], validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(raw) <= 64


SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "cookie"}


class Mock:
    def __init__(self, args):
        self.args = args
        self.api_key = args.api_key
        self.management_key = args.management_key
        self.verbose = args.verbose
        self.lock = threading.RLock()
        self.page_cache = LRU(args.cache_mb * 1024 * 1024)
        self.summaries = SummaryGen(self)
        self.pager = TimeseriesPager(self)
        self.workouts_seen = {}
        self.sleeps_seen = {}
        self.reset()

    def default_config(self):
        density = dict(self.args.density_overrides)
        if self.args.dense:
            density.setdefault("heartrate", DENSE_HEARTRATE)
        return {"density": density, "page_samples": self.args.page_samples, "page_days": self.args.page_days,
                "data_version": 1, "refresh_limit": self.args.refresh_limit,
                "introspect_page_size": self.args.introspect_page_size,
                "require_known_user": self.args.require_known_user}

    def reset(self):
        with self.lock:
            self.config = self.default_config()
            self.users = collections.OrderedDict()        # user_id -> user dict
            self.by_client = {}                            # client_user_id -> user_id
            self.deleted = {}                              # user_id -> user dict (undo window)
            self.connections = {}                          # user_id -> OrderedDict slug -> conn
            self.refresh_times = collections.defaultdict(collections.deque)
            self.webhooks = collections.defaultdict(collections.OrderedDict)   # scope -> id -> wh
            self.source_priorities = default_source_priorities()           # data_type -> [slug, ...]
            self.wh_seq = 0
            self.faults = []
            self.fault_seq = 0
            self.lab_orders = collections.OrderedDict()   # order id -> ClientFacingOrder
            self.lab_results = {}                          # order id -> LabResultsRaw
            self.sense_tables = {}                         # (user_id, query id or slug) -> {column: [values]}
            self.requests = collections.deque(maxlen=1000)
            self.req_seq = 0
            self.stats = {"total": 0, "by_prefix": collections.Counter(), "by_route": collections.Counter(),
                          "by_status": collections.Counter(), "faults_injected": 0, "dropped": 0,
                          "auth_failures": 0, "bytes_sent": 0, "samples_served": 0}
        self.page_cache.clear()
        self.pager.day_cache.clear()

    # ---- id registries (streams consistent with summaries)
    def remember_workout(self, wid, user_id, start, duration, sport):
        with self.lock:
            if len(self.workouts_seen) > 200_000:
                self.workouts_seen.clear()
            self.workouts_seen[wid] = (user_id, start, duration, sport)

    def remember_sleep(self, sid, user_id, start, end):
        with self.lock:
            if len(self.sleeps_seen) > 200_000:
                self.sleeps_seen.clear()
            self.sleeps_seen[sid] = (user_id, start, end)

    # ---- faults
    def add_fault(self, spec):
        if not isinstance(spec, dict):
            raise validation_error(("body",), "Input should be an object")
        prefix = spec.get("path_prefix")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise validation_error(("body", "path_prefix"), "path_prefix must be a string starting with /")
        responses = spec.get("responses")
        if not isinstance(responses, list) or not responses:
            raise validation_error(("body", "responses"), "responses must be a non-empty list")
        allowed = {"status", "headers", "body", "content_type", "delay_ms", "drop", "truncate",
                   "template", "body_b64", "generate", "chunked"}
        for i, r in enumerate(responses):
            if not isinstance(r, dict) or not set(r) <= allowed or not r:
                raise validation_error(("body", "responses", i), "each response is an object with keys from %s"
                                       % sorted(allowed))
            if "status" in r and not (isinstance(r["status"], int) and 100 <= r["status"] <= 599):
                raise validation_error(("body", "responses", i, "status"), "status must be an int 100..599")
            if "headers" in r and not isinstance(r["headers"], dict):
                raise validation_error(("body", "responses", i, "headers"), "headers must be an object")
            if "body_b64" in r:
                try:
                    base64.b64decode(r["body_b64"], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise validation_error(("body", "responses", i, "body_b64"), "body_b64 must be base64")
            g = r.get("generate")
            if g is not None and not (isinstance(g, dict) and isinstance(g.get("bytes"), int)
                                      and 2 <= g["bytes"] <= 512 * 1024 * 1024
                                      and g.get("shape", "samples") in ("samples", "numbers")):
                raise validation_error(("body", "responses", i, "generate"),
                                       "generate is {bytes: 2..512 MiB, shape?: samples|numbers}")
        repeat = spec.get("repeat", 1)
        if not isinstance(repeat, int) or repeat < 1:
            raise validation_error(("body", "repeat"), "repeat must be a positive int")
        method = spec.get("method")
        with self.lock:
            self.fault_seq += 1
            rule = {"id": self.fault_seq, "path_prefix": prefix, "method": method.upper() if method else None,
                    "responses": collections.deque(responses * repeat)}
            self.faults.append(rule)
            return {"id": rule["id"], "queued": len(rule["responses"])}

    def take_fault(self, method, path):
        with self.lock:
            for rule in self.faults:
                if path.startswith(rule["path_prefix"]) and rule["method"] in (None, method) and rule["responses"]:
                    r = rule["responses"].popleft()
                    if not rule["responses"]:
                        self.faults.remove(rule)
                    self.stats["faults_injected"] += 1
                    return r
        return None

    def fault_list(self):
        with self.lock:
            return [{"id": f["id"], "path_prefix": f["path_prefix"], "method": f["method"],
                     "remaining": list(f["responses"])} for f in self.faults]

    # ---- request log / stats
    def record(self, entry, route, status, nbytes, samples=0):
        prefix = "/".join(entry["path"].split("/")[:3]) or "/"
        with self.lock:
            self.req_seq += 1
            entry["seq"] = self.req_seq
            entry["status"] = status
            entry["route"] = route
            self.requests.append(entry)
            st = self.stats
            st["total"] += 1
            st["by_prefix"][prefix] += 1
            st["by_route"][route or "unmatched"] += 1
            st["by_status"][str(status) if status is not None else "dropped"] += 1
            st["bytes_sent"] += nbytes
            st["samples_served"] += samples
            if status is None:
                st["dropped"] += 1
            if status == 401:
                st["auth_failures"] += 1

    # ---- users
    def new_user(self, client_user_id, body):
        uid = det_uuid("user", client_user_id)
        created = now_iso()
        user = {"user_id": uid, "team_id": TEAM_ID, "client_user_id": client_user_id, "created_on": created,
                "fallback_time_zone": None, "fallback_birth_date": None,
                "ingestion_start": None, "ingestion_end": None}
        self.apply_user_fields(user, body, created)
        conns = collections.OrderedDict()
        for slug in DEFAULT_CONNECTIONS:
            conns[slug] = self.make_connection(uid, slug, created)
        return user, conns

    def apply_user_fields(self, user, body, when):
        if "fallback_time_zone" in body:
            tz = body["fallback_time_zone"]
            if tz is not None and not isinstance(tz, str):
                raise validation_error(("body", "fallback_time_zone"), "Input should be a valid string")
            user["fallback_time_zone"] = None if tz is None else {"id": tz, "source_slug": "manual", "updated_at": when}
        if "fallback_birth_date" in body:
            bd = body["fallback_birth_date"]
            if bd is not None:
                try:
                    dt.date.fromisoformat(bd)
                except (TypeError, ValueError):
                    raise validation_error(("body", "fallback_birth_date"), "Input should be a valid date")
            user["fallback_birth_date"] = None if bd is None else {"value": bd, "source_slug": "manual",
                                                                   "updated_at": when}
        for k in ("ingestion_start", "ingestion_end"):
            if k in body:
                v = body[k]
                if v is not None:
                    try:
                        dt.date.fromisoformat(v)
                    except (TypeError, ValueError):
                        raise validation_error(("body", k), "Input should be a valid date")
                user[k] = v

    @staticmethod
    def make_connection(uid, slug, created):
        error = slug == ERROR_PROVIDER
        ext = {"oura": "OURA-%s" % uid[:8], "withings": str(seed_of(uid, "withings") % 10 ** 8),
               "garmin": "garmin-%s" % uid[-12:], "freestyle_libre": "libre-%s@example.invalid" % uid[:6]}.get(slug)
        return {"name": PROVIDER_NAMES[slug], "slug": slug,
                "logo": "https://logos.mock-junction.invalid/%s.png" % slug, "created_on": created,
                "status": "error" if error else "connected", "external_user_id": ext,
                "error_details": {"error_type": "token_refresh_failed",
                                  "error_message": "The provider rejected the refresh token.",
                                  "errored_at": created} if error else None,
                "resource_availability": {r: {"status": "available", "scope_requirements": None}
                                          for r in provider_resources(slug)}}

    def user_view(self, user):
        conns = self.connections.get(user["user_id"], {})
        out = dict(user)
        out["connected_sources"] = [
            {"provider": {"name": c["name"], "slug": c["slug"], "logo": c["logo"]}, "created_on": c["created_on"],
             "source": {"name": c["name"], "slug": c["slug"], "logo": c["logo"]}} for c in conns.values()]
        return out

    def get_user(self, user_id):
        uid = parse_uuid(user_id, ("path", "user_id"))
        user = self.users.get(uid)
        if user is None:
            raise ApiError(404, "User not found")
        return user


# --------------------------------------------------------------------------- route handlers

def h_summary(m, req, resource, user_id):
    if resource not in SUMMARY_KEYS:
        raise ApiError(404, "Not Found")
    uid = parse_uuid(user_id, ("path", "user_id"))
    cfg = m.config
    if cfg["require_known_user"] and uid not in m.users:
        raise ApiError(404, "User not found")
    provider = req.query.get("provider", "")
    version = cfg["data_version"]
    if resource == "profile":
        if provider and provider != SUMMARY_SOURCES["profile"][0]:
            raise ApiError(404, "Profile not found")
        return 200, m.summaries.profile(uid, version)
    start, end = date_range(req.query)
    objs = []
    if not provider or provider == SUMMARY_SOURCES[resource][0]:
        first, last = start // 86400 + EPOCH_ORD, end // 86400 + EPOCH_ORD
        for d in range(first, last + 1):
            objs.append(m.summaries.build(resource, uid, d, version))
    return 200, {SUMMARY_KEYS[resource]: objs}


def h_grouped(m, req, user_id, segment):
    seg = SEGMENTS.get(segment)
    if seg is None:
        raise ApiError(404, "Not Found")
    uid = parse_uuid(user_id, ("path", "user_id"))
    cfg = m.config
    if cfg["require_known_user"] and uid not in m.users:
        raise ApiError(404, "User not found")
    start, end = date_range(req.query)
    cursor = req.query.get("next_cursor") or req.query.get("cursor") or None
    body, n = m.pager.page(seg, uid, start, end, req.query.get("provider", ""), cursor, cfg)
    req.samples = n
    return 200, body


def h_workout_stream(m, req, workout_id):
    wid = parse_uuid(workout_id, ("path", "workout_id"))
    seen = m.workouts_seen.get(wid)
    if seen:
        _, start, duration, sport = seen
    else:
        start = 1_704_067_200 + seed_of(wid, "start") % (365 * 86400)
        duration = (30 + seed_of(wid, "dur") % 60) * 60
        sport = "running"
    r = random.Random(seed_of(wid, "stream"))
    n = duration // 5
    lat0, lng0 = 51.5 + r.uniform(-0.05, 0.05), -0.12 + r.uniform(-0.05, 0.05)
    times = [start + 5 * i for i in range(n)]
    vel = [round(2.2 + r.uniform(0, 1.3), 2) for _ in range(n)]
    dist, acc = [], 0.0
    for v in vel:
        acc += v * 5
        dist.append(round(acc, 1))
    body = {"time": times, "heartrate": [110 + min(60, i // 20) + r.randint(0, 8) for i in range(n)],
            "cadence": [r.randint(75, 95) if sport != "swimming" else r.randint(20, 35) for _ in range(n)],
            "altitude": [round(20 + 10 * r.random(), 1) for _ in range(n)], "velocity_smooth": vel,
            "lat": [round(lat0 + i * 1e-5, 6) for i in range(n)], "lng": [round(lng0 + i * 1e-5, 6) for i in range(n)],
            "distance": dist, "power": [], "resistance": [], "temperature": [round(18 + r.random(), 1) for _ in range(n)]}
    return 200, body


def h_sleep_stream(m, req, sleep_id):
    sid = parse_uuid(sleep_id, ("path", "sleep_id"))
    seen = m.sleeps_seen.get(sid)
    if seen:
        uid, start, end = seen
        tzo = user_tz(uid)[0]
    else:
        start = 1_704_067_200 + seed_of(sid, "start") % (365 * 86400)
        end, tzo = start + 8 * 3600, 0
    r = random.Random(seed_of(sid, "stream"))
    ts = list(range(start, end, 300))

    def series(unit, f):
        return [{"timestamp": iso(t), "timezone_offset": tzo, "type": None, "unit": unit, "value": f(i)}
                for i, t in enumerate(ts)]
    return 200, {"hrv": series("rmssd", lambda i: round(r.uniform(20, 90), 1)),
                 "heartrate": series("bpm", lambda i: r.randint(45, 65)),
                 "hypnogram": series("stage", lambda i: [2, 1, 2, 3, 4][(i // 6) % 5]),
                 "respiratory_rate": series("bpm", lambda i: round(r.uniform(12, 18), 1))}


def h_user_create(m, req):
    body = req.json_object()
    cid = body.get("client_user_id")
    if not isinstance(cid, str) or not cid:
        raise validation_error(("body", "client_user_id"), "Field required", "missing", body)
    with m.lock:
        if cid in m.by_client:
            existing = m.users[m.by_client[cid]]
            raise ApiError(400, {"error_type": "INVALID_REQUEST", "error_message": "Client user id already exists.",
                                 "user_id": existing["user_id"], "created_on": existing["created_on"]})
        user, conns = m.new_user(cid, body)
        m.users[user["user_id"]] = user
        m.by_client[cid] = user["user_id"]
        m.connections[user["user_id"]] = conns
        m.deleted.pop(user["user_id"], None)
        return 200, m.user_view(user)


def h_user_list(m, req):
    offset = parse_int(req.query, "offset", 0, lo=0)
    limit = parse_int(req.query, "limit", 100, lo=1, hi=500)
    with m.lock:
        users = list(m.users.values())
        page = [m.user_view(u) for u in users[offset:offset + limit]]
        return 200, {"users": page, "total": len(users), "offset": offset, "limit": limit}


def h_user_get(m, req, user_id):
    with m.lock:
        return 200, m.user_view(m.get_user(user_id))


def h_user_resolve(m, req, client_user_id):
    cid = unquote(client_user_id)
    with m.lock:
        uid = m.by_client.get(cid)
        if uid is None:
            raise ApiError(404, "User not found")
        return 200, m.user_view(m.users[uid])


def h_user_patch(m, req, user_id):
    body = req.json_object()
    with m.lock:
        user = m.get_user(user_id)
        if "client_user_id" in body and body["client_user_id"] != user["client_user_id"]:
            cid = body["client_user_id"]
            if not isinstance(cid, str) or not cid:
                raise validation_error(("body", "client_user_id"), "Input should be a valid string")
            if cid in m.by_client:
                other = m.users[m.by_client[cid]]
                raise ApiError(400, {"error_type": "INVALID_REQUEST",
                                     "error_message": "Client user id already exists.",
                                     "user_id": other["user_id"], "created_on": other["created_on"]})
            del m.by_client[user["client_user_id"]]
            m.by_client[cid] = user["user_id"]
            user["client_user_id"] = cid
        m.apply_user_fields(user, body, now_iso())
        return 204, None


def h_user_delete(m, req, user_id):
    with m.lock:
        user = m.get_user(user_id)
        del m.users[user["user_id"]]
        del m.by_client[user["client_user_id"]]
        m.deleted[user["user_id"]] = (user, m.connections.pop(user["user_id"], {}))
        return 200, {"success": True}


def h_user_undo_delete(m, req):
    uid, cid = req.query.get("user_id"), req.query.get("client_user_id")
    if bool(uid) == bool(cid):
        raise validation_error(("query",), "Exactly one of user_id or client_user_id is required")
    with m.lock:
        if uid:
            uid = parse_uuid(uid, ("query", "user_id"))
            item = m.deleted.get(uid)
        else:
            item = next((v for v in m.deleted.values() if v[0]["client_user_id"] == cid), None)
        if item is None or item[0]["client_user_id"] in m.by_client:
            raise ApiError(404, "User not found")
        user, conns = item
        del m.deleted[user["user_id"]]
        m.users[user["user_id"]] = user
        m.by_client[user["client_user_id"]] = user["user_id"]
        m.connections[user["user_id"]] = conns
        return 200, {"success": True}


def h_providers(m, req, user_id):
    with m.lock:
        user = m.get_user(user_id)
        return 200, {"providers": [dict(c) for c in m.connections.get(user["user_id"], {}).values()]}


def h_deregister(m, req, user_id, provider):
    with m.lock:
        user = m.get_user(user_id)
        conns = m.connections.get(user["user_id"], {})
        if provider not in conns:
            raise ApiError(404, "Provider connection not found")
        del conns[provider]
        return 200, {"success": True}


def h_refresh(m, req, user_id):
    timeout = parse_int(req.query, "timeout", 10, lo=5, hi=60)
    del timeout
    with m.lock:
        user = m.get_user(user_id)
        times = m.refresh_times[user["user_id"]]
        now = time.monotonic()
        while times and now - times[0] > 3600:
            times.popleft()
        if len(times) >= m.config["refresh_limit"]:
            raise ApiError(429, "Refresh rate limit exceeded: %d per hour per user" % m.config["refresh_limit"])
        times.append(now)
        conns = m.connections.get(user["user_id"], {})
        ok = [c["slug"] for c in conns.values() if c["status"] == "connected"]
        bad = [c["slug"] for c in conns.values() if c["status"] != "connected"]
        return 200, {"success": True, "user_id": user["user_id"], "refreshed_sources": ok,
                     "in_progress_sources": [], "failed_sources": bad}


def introspect_pairs(m, req):
    """(user_id, provider) pairs the introspection endpoints page over."""
    user_id = req.query.get("user_id")
    provider = req.query.get("provider")
    with m.lock:
        if user_id:
            uid = parse_uuid(user_id, ("query", "user_id"))
            conns = m.connections.get(uid)
            slugs = list(conns) if conns is not None else list(DEFAULT_CONNECTIONS)
            pairs = [(uid, s) for s in slugs]
        else:
            pairs = [(uid, s) for uid in m.users for s in m.connections.get(uid, {})]
    if provider:
        pairs = [p for p in pairs if p[1] == provider]
    return pairs


def introspect_page(m, req, build):
    pairs = introspect_pairs(m, req)
    user_limit = parse_int(req.query, "user_limit", 50, lo=1)
    cursor = req.query.get("next_cursor") or req.query.get("cursor")
    start = 0
    if cursor:
        try:
            kind, idx = unb64url(cursor).split(":")
            start = int(idx)
            if kind != "ix" or start < 0:
                raise ValueError
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise validation_error(("query", "next_cursor"), "Invalid cursor", "value_error", cursor)
    size = m.config["introspect_page_size"]
    chunk, users = [], []
    i = start
    while i < len(pairs) and len(chunk) < size:
        uid, _ = pairs[i]
        if uid not in users:
            if len(users) >= user_limit:
                break
            users.append(uid)
        chunk.append(pairs[i])
        i += 1
    data = collections.OrderedDict()
    for uid, slug in chunk:
        data.setdefault(uid, {"user_id": uid, "provider": {}})["provider"][slug] = build(uid, slug)
    nxt = b64url("ix:%d" % i) if i < len(pairs) else None
    return 200, {"data": list(data.values()), "next_cursor": nxt, "next": nxt}


# GET /v2/team/source/priorities: Junction's OpenAPI specification types the answer as an array
# of free-form objects and the query's data_type as PriorityResource (workouts, activity, sleep,
# body, timeseries; absent = all). The specification names no field of the objects (items: object,
# additionalProperties: true; checked against tryVital/vital-fern-api fern/openapi/openapi.json,
# API 0.3.527), so the fields here are our choice: each object names its data_type, its priority
# (1 first) and the provider in the shape every summary carries (source: ClientFacingProvider).
PRIORITY_RESOURCES = ("workouts", "activity", "sleep", "body", "timeseries")


def default_source_priorities():
    devices = ["oura", "garmin", "whoop_v2", "fitbit", "polar", "withings", "apple_health_kit", "health_connect"]
    return {dt: list(devices) for dt in PRIORITY_RESOURCES}


def priority_objects(m, data_type):
    out = []
    for dt in ([data_type] if data_type else PRIORITY_RESOURCES):
        for n, slug in enumerate(m.source_priorities.get(dt, []), 1):
            out.append({"data_type": dt, "priority": n,
                        "source": {"name": PROVIDER_NAMES.get(slug, slug.replace("_", " ").title()),
                                   "slug": slug, "logo": "https://storage.googleapis.com/vital-assets/%s.png" % slug}})
    return out


def h_source_priorities(m, req):
    dt = req.query.get("data_type")
    if dt is not None and dt not in PRIORITY_RESOURCES:
        raise validation_error(("query", "data_type"), "Input should be 'workouts', 'activity', 'sleep', 'body' or "
                               "'timeseries'", "enum", dt)
    with m.lock:
        return 200, priority_objects(m, dt)


def h_source_priorities_patch(m, req):
    """PATCH: body {data_type: [provider slug, ...]} (the order is the priority) replaces those lists."""
    body = req.json_object()
    for dt, slugs in body.items():
        if dt not in PRIORITY_RESOURCES:
            raise validation_error(("body", dt), "unknown data_type", "enum", dt)
        if not isinstance(slugs, list) or not all(isinstance(x, str) for x in slugs):
            raise validation_error(("body", dt), "Input should be a list of provider slugs", "list_type", slugs)
    with m.lock:
        for dt, slugs in body.items():
            m.source_priorities[dt] = list(slugs)
        return 200, priority_objects(m, None)


def h_introspect_resources(m, req):
    today = int(time.time()) // 86400 * 86400

    def build(uid, slug):
        out = {}
        for res in provider_resources(slug):
            ok = slug != ERROR_PROVIDER
            out[res] = {"last_attempt": {"timestamp": iso(today + seed_of(uid, slug, res) % 86400 - 86400),
                                         "status": "success" if ok else "failure"},
                        "oldest_data": iso(today - 90 * 86400), "newest_data": iso(today - 86400),
                        "sent_count": seed_of(uid, slug, res, "n") % 5000}
        return out
    return introspect_page(m, req, build)


def h_introspect_historical(m, req):
    today = int(time.time()) // 86400 * 86400

    def build(uid, slug):
        pulled, not_pulled = {}, []
        for res in provider_resources(slug):
            if slug == "apple_health_kit" and res in ("electrocardiogram", "menstrual_cycle"):
                not_pulled.append(res)
                continue
            ok = slug != ERROR_PROVIDER
            sched = today - 90 * 86400 + seed_of(uid, slug, "s") % 3600
            pulled[res] = {"status": "success" if ok else "failure",
                           "range_start": iso(today - 90 * 86400), "range_end": iso(today),
                           "timeline": {"scheduled_at": iso(sched), "started_at": iso(sched + 5),
                                        "ended_at": iso(sched + 600)},
                           "days_with_data": 90 if ok else 0, "release": "mock",
                           "trace_id": "%016x" % seed_of(uid, slug, res, "trace"),
                           "error_details": None if ok else "provider_unavailable"}
        return {"pulled": pulled, "not_pulled": not_pulled}
    return introspect_page(m, req, build)


# ---- management API

def mgmt_scope(org_id, team_id, env):
    org = parse_uuid(org_id, ("path", "org_id"))
    team = parse_uuid(team_id, ("path", "team_id"))
    if env not in ("production", "sandbox"):
        raise validation_error(("path", "environment"), "Input should be 'production' or 'sandbox'", "enum", env)
    return (org, team, env)


def wh_validate(body, partial):
    out = {}
    if not partial or "url" in body:
        url = body.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise validation_error(("body", "url"), "Field required" if url is None else "Input should be a valid URL",
                                   "missing" if url is None else "url_parsing", url)
        out["url"] = url
    if "description" in body:
        if not isinstance(body["description"], str):
            raise validation_error(("body", "description"), "Input should be a valid string")
        out["description"] = body["description"]
    if "rate_limit" in body:
        rl = body["rate_limit"]
        if rl is not None and (not isinstance(rl, int) or isinstance(rl, bool) or rl < 0):
            raise validation_error(("body", "rate_limit"), "Input should be a non-negative integer")
        out["rate_limit"] = rl
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise validation_error(("body", "disabled"), "Input should be a valid boolean")
        out["disabled"] = body["disabled"]
    if "filter_types" in body:
        ft = body["filter_types"]
        if ft is not None and (not isinstance(ft, list) or not all(isinstance(x, str) for x in ft)):
            raise validation_error(("body", "filter_types"), "Input should be a list of event types")
        out["filter_types"] = ft
    return out


def wh_public(wh):
    return {k: wh[k] for k in ("id", "description", "rate_limit", "url", "disabled", "filter_types",
                               "created_at", "updated_at")}


def wh_get(m, scope, wid):
    wh = m.webhooks[scope].get(wid)
    if wh is None:
        raise ApiError(404, "Webhook not found")
    return wh


def h_wh_list(m, req, org_id, team_id, env):
    scope = mgmt_scope(org_id, team_id, env)
    limit = parse_int(req.query, "limit", 50, lo=1, hi=250)
    cursor = req.query.get("next_cursor")
    after = 0
    if cursor:
        try:
            kind, n = unb64url(cursor).split(":")
            after = int(n)
            if kind != "wh":
                raise ValueError
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise validation_error(("query", "next_cursor"), "Invalid cursor", "value_error", cursor)
    with m.lock:
        items = [w for w in m.webhooks[scope].values() if w["seq"] >= after]
        page = items[:limit]
        nxt = b64url("wh:%d" % items[limit]["seq"]) if len(items) > limit else None
        return 200, {"data": [wh_public(w) for w in page], "next_cursor": nxt}


def h_wh_create(m, req, org_id, team_id, env):
    scope = mgmt_scope(org_id, team_id, env)
    body = req.json_object()
    fields = wh_validate(body, partial=False)
    secret = body.get("secret")
    if secret is not None and not valid_secret(secret):
        raise validation_error(("body", "secret"), "secret must be whsec_ + base64 of 24..64 bytes")
    with m.lock:
        m.wh_seq += 1
        now = now_iso()
        wh = {"id": gen_ep_id(), "description": "", "rate_limit": None, "url": None, "disabled": False,
              "filter_types": None, "created_at": now, "updated_at": now, "seq": m.wh_seq,
              "secret": secret or gen_secret(), "headers": {}}
        wh.update(fields)
        m.webhooks[scope][wh["id"]] = wh
        return 200, wh_public(wh)


def h_wh_get(m, req, org_id, team_id, env, wid):
    with m.lock:
        return 200, wh_public(wh_get(m, mgmt_scope(org_id, team_id, env), wid))


def h_wh_patch(m, req, org_id, team_id, env, wid):
    scope = mgmt_scope(org_id, team_id, env)
    body = req.json_object()
    with m.lock:
        wh = wh_get(m, scope, wid)
        wh.update(wh_validate(body, partial=True))
        wh["updated_at"] = now_iso()
        return 200, wh_public(wh)


def h_wh_delete(m, req, org_id, team_id, env, wid):
    scope = mgmt_scope(org_id, team_id, env)
    with m.lock:
        wh_get(m, scope, wid)
        del m.webhooks[scope][wid]
        return 204, None


def h_wh_headers_get(m, req, org_id, team_id, env, wid):
    with m.lock:
        wh = wh_get(m, mgmt_scope(org_id, team_id, env), wid)
        hdrs = {k: v for k, v in wh["headers"].items() if k.lower() not in SENSITIVE_HEADERS}
        sens = [k for k in wh["headers"] if k.lower() in SENSITIVE_HEADERS]
        return 200, {"headers": hdrs, "sensitive": sens}


def h_wh_headers_put(m, req, org_id, team_id, env, wid):
    scope = mgmt_scope(org_id, team_id, env)
    body = req.json_object()
    hdrs = body.get("headers")
    if not isinstance(hdrs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hdrs.items()):
        raise validation_error(("body", "headers"), "headers must be an object of strings", "missing", hdrs)
    with m.lock:
        wh = wh_get(m, scope, wid)
        wh["headers"] = dict(hdrs)
        wh["updated_at"] = now_iso()
        return 204, None


def h_wh_secret(m, req, org_id, team_id, env, wid):
    with m.lock:
        return 200, {"key": wh_get(m, mgmt_scope(org_id, team_id, env), wid)["secret"]}


def h_wh_rotate(m, req, org_id, team_id, env, wid):
    scope = mgmt_scope(org_id, team_id, env)
    body = req.json_object() if req.body.strip() else {}
    key = body.get("key")
    if key is not None and not valid_secret(key):
        raise validation_error(("body", "key"), "key must be whsec_ + base64 of 24..64 bytes")
    with m.lock:
        wh = wh_get(m, scope, wid)
        wh["secret"] = key or gen_secret()
        wh["updated_at"] = now_iso()
        return 204, None


def h_delivery_metric(m, req, org_id, team_id, env):
    mgmt_scope(org_id, team_id, env)
    interval = req.query.get("interval", "1h")
    if interval not in ("5m", "15m", "1h", "1d"):
        raise validation_error(("query", "interval"), "Input should be '5m', '15m', '1h' or '1d'", "enum", interval)
    return 200, {"status": "success", "data": {"resultType": "matrix", "result": []}}


# --------------------------------------------------------------------------- lab testing, Sense
# Shapes from Junction's OpenAPI spec: GET /v3/orders -> GetOrdersResponse {orders, total, page,
# size} (page >= 1 default 1, size 1..100 default 50, filter user_id); GET /v3/order/{order_id} ->
# ClientFacingOrder; GET /v3/order/{order_id}/result -> LabResultsRaw {metadata, results,
# missing_results, sample_information}. The orders and results are seeded with POST /_mock/lab.
# Sense: GET /aggregate/v1/user/{user_id}/continuous_query/{query}/result_table -> the columnar
# table ({column: [values]}), seeded with POST /_mock/sense.

def h_lab_orders(m, req):
    page = parse_int(req.query, "page", 1, lo=1)
    size = parse_int(req.query, "size", 50, lo=1, hi=100)
    user_id = req.query.get("user_id")
    if user_id:
        user_id = parse_uuid(user_id, ("query", "user_id"))
    with m.lock:
        orders = [o for o in m.lab_orders.values() if not user_id or o.get("user_id") == user_id]
    return 200, {"orders": orders[(page - 1) * size:page * size], "total": len(orders), "page": page, "size": size}


def h_lab_order(m, req, order_id):
    oid = parse_uuid(order_id, ("path", "order_id"))
    with m.lock:
        o = m.lab_orders.get(oid)
    if o is None:
        raise ApiError(404, "Order not found")
    return 200, o


def h_lab_result(m, req, order_id):
    oid = parse_uuid(order_id, ("path", "order_id"))
    with m.lock:
        r = m.lab_results.get(oid)
    if r is None:
        raise ApiError(404, "Results not found")
    return 200, r


def h_sense_result_table(m, req, user_id, query):
    uid = parse_uuid(user_id, ("path", "user_id"))
    with m.lock:
        t = m.sense_tables.get((uid, query))
    if t is None:
        raise ApiError(404, "Continuous query not found")
    return 200, t


MG = r"^/v1/org/(?P<org_id>[^/]+)/team/(?P<team_id>[^/]+)/(?P<env>[^/]+)"
ROUTES = [(meth, re.compile(rx), fn, auth, tmpl) for meth, rx, fn, auth, tmpl in [
    ("GET", r"^/v2/summary/(?P<resource>[^/]+)/(?P<user_id>[^/]+)$", h_summary, "data",
     "/v2/summary/{resource}/{user_id}"),
    ("GET", r"^/v2/timeseries/workouts/(?P<workout_id>[^/]+)/stream$", h_workout_stream, "data",
     "/v2/timeseries/workouts/{workout_id}/stream"),
    ("GET", r"^/v2/timeseries/sleep/(?P<sleep_id>[^/]+)/stream$", h_sleep_stream, "data",
     "/v2/timeseries/sleep/{sleep_id}/stream"),
    ("GET", r"^/v2/timeseries/(?P<user_id>[^/]+)/(?P<segment>[^/]+)/grouped$", h_grouped, "data",
     "/v2/timeseries/{user_id}/{resource}/grouped"),
    ("POST", r"^/v2/user/?$", h_user_create, "data", "/v2/user"),
    ("GET", r"^/v2/user/?$", h_user_list, "data", "/v2/user"),
    ("POST", r"^/v2/user/undo_delete$", h_user_undo_delete, "data", "/v2/user/undo_delete"),
    ("GET", r"^/v2/user/resolve/(?P<client_user_id>[^/]+)$", h_user_resolve, "data",
     "/v2/user/resolve/{client_user_id}"),
    ("GET", r"^/v2/user/providers/(?P<user_id>[^/]+)$", h_providers, "data", "/v2/user/providers/{user_id}"),
    ("POST", r"^/v2/user/refresh/(?P<user_id>[^/]+)$", h_refresh, "data", "/v2/user/refresh/{user_id}"),
    ("GET", r"^/v2/user/(?P<user_id>[^/]+)$", h_user_get, "data", "/v2/user/{user_id}"),
    ("PATCH", r"^/v2/user/(?P<user_id>[^/]+)$", h_user_patch, "data", "/v2/user/{user_id}"),
    ("DELETE", r"^/v2/user/(?P<user_id>[^/]+)$", h_user_delete, "data", "/v2/user/{user_id}"),
    ("DELETE", r"^/v2/user/(?P<user_id>[^/]+)/(?P<provider>[^/]+)$", h_deregister, "data",
     "/v2/user/{user_id}/{provider}"),
    ("GET", r"^/v3/orders$", h_lab_orders, "data", "/v3/orders"),
    ("GET", r"^/v3/order/(?P<order_id>[^/]+)$", h_lab_order, "data", "/v3/order/{order_id}"),
    ("GET", r"^/v3/order/(?P<order_id>[^/]+)/result$", h_lab_result, "data", "/v3/order/{order_id}/result"),
    ("GET", r"^/aggregate/v1/user/(?P<user_id>[^/]+)/continuous_query/(?P<query>[^/]+)/result_table$",
     h_sense_result_table, "data", "/aggregate/v1/user/{user_id}/continuous_query/{query}/result_table"),
    ("GET", r"^/v2/team/source/priorities$", h_source_priorities, "data", "/v2/team/source/priorities"),
    ("PATCH", r"^/v2/team/source/priorities$", h_source_priorities_patch, "data", "/v2/team/source/priorities"),
    ("GET", r"^/v2/introspect/resources$", h_introspect_resources, "data", "/v2/introspect/resources"),
    ("GET", r"^/v2/introspect/historical_pull$", h_introspect_historical, "data", "/v2/introspect/historical_pull"),
    ("GET", MG + r"/webhook/?$", h_wh_list, "mgmt", "/v1/org/{org}/team/{team}/{env}/webhook"),
    ("POST", MG + r"/webhook/?$", h_wh_create, "mgmt", "/v1/org/{org}/team/{team}/{env}/webhook"),
    ("GET", MG + r"/webhook/(?P<wid>[^/]+)$", h_wh_get, "mgmt", "/v1/org/{org}/team/{team}/{env}/webhook/{id}"),
    ("PATCH", MG + r"/webhook/(?P<wid>[^/]+)$", h_wh_patch, "mgmt", "/v1/org/{org}/team/{team}/{env}/webhook/{id}"),
    ("DELETE", MG + r"/webhook/(?P<wid>[^/]+)$", h_wh_delete, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/webhook/{id}"),
    ("GET", MG + r"/webhook/(?P<wid>[^/]+)/headers$", h_wh_headers_get, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/webhook/{id}/headers"),
    ("PUT", MG + r"/webhook/(?P<wid>[^/]+)/headers$", h_wh_headers_put, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/webhook/{id}/headers"),
    ("GET", MG + r"/webhook/(?P<wid>[^/]+)/secret$", h_wh_secret, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/webhook/{id}/secret"),
    ("POST", MG + r"/webhook/(?P<wid>[^/]+)/secret/rotate$", h_wh_rotate, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/webhook/{id}/secret/rotate"),
    ("GET", MG + r"/event_delivery_metric$", h_delivery_metric, "mgmt",
     "/v1/org/{org}/team/{team}/{env}/event_delivery_metric"),
]]


# --------------------------------------------------------------------------- control API

def control(m, req):
    path, method = req.path, req.method
    if path == "/_mock/health" and method == "GET":
        return 200, {"ok": True}
    if path == "/_mock/help" and method == "GET":
        return 200, CONTROL_HELP
    if path == "/_mock/faults":
        if method == "POST":
            return 200, m.add_fault(req.json_object())
        if method == "GET":
            return 200, m.fault_list()
        if method == "DELETE":
            with m.lock:
                m.faults.clear()
            return 200, {"ok": True}
    if path == "/_mock/lab" and method == "POST":
        # {orders: [ClientFacingOrder], results: {order_id: LabResultsRaw}}: added or replaced by id
        body = req.json_object()
        orders, results = body.get("orders", []), body.get("results", {})
        if not isinstance(orders, list) or not isinstance(results, dict):
            raise validation_error(("body",), "orders must be a list, results an object")
        with m.lock:
            for o in orders:
                if not isinstance(o, dict) or "id" not in o:
                    raise validation_error(("body", "orders"), "every order needs an id")
                m.lab_orders[parse_uuid(o["id"], ("body", "orders", "id"))] = o
            for k, v in results.items():
                m.lab_results[parse_uuid(k, ("body", "results"))] = v
            return 200, {"orders": len(m.lab_orders), "results": len(m.lab_results)}
    if path == "/_mock/sense" and method == "POST":
        # {user_id, query, table: {column: [values]}}: the result table of that user's query
        body = req.json_object()
        if not isinstance(body.get("query"), str) or not isinstance(body.get("table"), dict):
            raise validation_error(("body",), "query (id or slug) and table are required")
        with m.lock:
            m.sense_tables[(parse_uuid(body.get("user_id"), ("body", "user_id")), body["query"])] = body["table"]
        return 200, {"ok": True}
    if path == "/_mock/reset" and method == "POST":
        m.reset()
        return 200, {"ok": True}
    if path == "/_mock/requests":
        if method == "DELETE":
            with m.lock:
                m.requests.clear()
            return 200, {"ok": True}
        if method == "GET":
            since = parse_int(req.query, "since", 0)
            limit = parse_int(req.query, "limit", 1000, lo=1, hi=1000)
            prefix = req.query.get("path_prefix", "")
            with m.lock:
                out = [e for e in m.requests if e["seq"] > since and e["path"].startswith(prefix)]
            return 200, out[-limit:]
    if path == "/_mock/stats" and method == "GET":
        with m.lock:
            st = {k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in m.stats.items()}
        st["page_cache"] = {"entries": len(m.page_cache.items), "bytes": m.page_cache.cost,
                            "hits": m.page_cache.hits, "misses": m.page_cache.misses}
        return 200, st
    if path == "/_mock/config":
        if method == "GET":
            return 200, m.config
        if method == "POST":
            body = req.json_object()
            with m.lock:
                cfg = dict(m.config, density=dict(m.config["density"]))
                for k, v in body.items():
                    if k == "density":
                        if not isinstance(v, dict):
                            raise validation_error(("body", "density"), "density must be an object")
                        for seg, n in v.items():
                            if seg not in SEGMENTS or not isinstance(n, int) or not 1 <= n <= 86400:
                                raise validation_error(("body", "density", seg), "unknown segment or bad density")
                            cfg["density"][seg] = n
                    elif k == "dense":
                        if v:
                            cfg["density"]["heartrate"] = DENSE_HEARTRATE
                        else:
                            cfg["density"].pop("heartrate", None)
                    elif k in ("page_samples", "page_days", "data_version", "refresh_limit", "introspect_page_size"):
                        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                            raise validation_error(("body", k), "must be a positive integer")
                        cfg[k] = v
                    elif k == "require_known_user":
                        cfg[k] = bool(v)
                    else:
                        raise validation_error(("body", k), "unknown config key")
                m.config = cfg
            return 200, m.config
    if path == "/_mock/users" and method == "POST":
        body = req.json_object()
        count = body.get("count", 1)
        prefix = body.get("prefix", "client-")
        if not isinstance(count, int) or not 1 <= count <= 100000 or not isinstance(prefix, str):
            raise validation_error(("body", "count"), "count must be 1..100000")
        created = []
        with m.lock:
            for i in range(count):
                cid = "%s%d" % (prefix, i)
                if cid in m.by_client:
                    created.append(m.by_client[cid])
                    continue
                user, conns = m.new_user(cid, {})
                m.users[user["user_id"]] = user
                m.by_client[cid] = user["user_id"]
                m.connections[user["user_id"]] = conns
                created.append(user["user_id"])
        return 200, {"user_ids": created}
    raise ApiError(404, "Not Found")


# --------------------------------------------------------------------------- HTTP plumbing

class Request:
    __slots__ = ("method", "path", "query", "body", "headers", "samples")

    def __init__(self, method, path, query, body, headers):
        self.method, self.path, self.query, self.body, self.headers = method, path, query, body, headers
        self.samples = 0

    def json_object(self):
        try:
            v = json.loads(self.body or b"null")
        except ValueError as e:
            raise ApiError(422, [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                  "input": {}, "ctx": {"error": str(e)}}])
        if not isinstance(v, dict):
            raise validation_error(("body",), "Input should be a valid dictionary", "model_attributes_type", v)
        return v


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-junction/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120

    def log_message(self, fmt, *args):
        if self.server.mock.verbose:
            sys.stderr.write("mock_junction: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, payload, headers=None, content_type="application/json", truncate=False,
             chunked=False, record=None):
        """Write one response; payload is bytes, None (empty) or a JSON-able object.  record(n) is
        called with the body's length before the first byte goes out, so a client that has its
        answer always finds the request in the log and the stats."""
        if payload is None:
            body = b""
        elif isinstance(payload, (bytes, bytearray)):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = DUMPS(payload).encode()
        reason = self.responses.get(status, ("Unknown",))[0]
        lines = ["HTTP/1.1 %d %s" % (status, reason), "Server: mock-junction/1.0",
                 "Date: " + self.date_time_string()]
        if status != 204 or body:
            lines.append("Content-Type: " + content_type)
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Content-Length: %d" % len(body))
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if self.close_connection or truncate:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if record:
            record(len(body))
        try:
            if truncate:
                self.wfile.write(head + body[:len(body) // 2])
                self.hard_close()
            elif chunked:
                self.wfile.write(head)
                for i in range(0, len(body), 65536):
                    part = body[i:i + 65536]
                    self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif len(body) < 65536:
                self.wfile.write(head + body)
            else:
                self.wfile.write(head)
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return len(body)

    def hard_close(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self, method):
        m = self.server.mock
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        req = Request(method, path, query, body, self.headers)
        if path.startswith("/_mock/"):
            try:
                status, payload = control(m, req)
                self.send(status, payload)
            except ApiError as e:
                self.send(e.status, {"detail": e.detail}, e.headers)
            return
        entry = self.log_entry(m, req)
        fault = m.take_fault(method, path)
        extra_headers, status_override = {}, None
        if fault:
            entry["fault"] = fault
            if fault.get("delay_ms"):
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault.get("drop"):
                m.record(entry, None, None, 0)
                self.hard_close()
                return
            extra_headers = {str(k): str(v) for k, v in (fault.get("headers") or {}).items()}
            if any(k in fault for k in ("body", "body_b64", "generate")) or fault.get("status", 200) >= 400:
                status = fault.get("status", 200)
                payload = fault.get("body")
                if "body_b64" in fault:
                    payload = base64.b64decode(fault["body_b64"])
                elif "generate" in fault:
                    payload = generated_json(fault["generate"]["bytes"], fault["generate"].get("shape", "samples"))
                elif payload is None:
                    payload = {"detail": self.responses.get(status, ("Error",))[0]}
                elif not isinstance(payload, str):
                    payload = DUMPS(payload)
                if fault.get("template") and isinstance(payload, str):
                    # echo what the request sent: a hostile or careless API repeating secrets
                    for name, value in (("{api_key}", self.headers.get("X-Vital-API-Key") or ""),
                                        ("{management_key}", self.headers.get("X-Management-Key") or ""),
                                        ("{request_body}", req.body.decode("utf-8", "replace"))):
                        payload = payload.replace(name, json.dumps(value)[1:-1])   # JSON-string-escaped
                self.send(status, payload, extra_headers, fault.get("content_type", "application/json"),
                          truncate=bool(fault.get("truncate")), chunked=bool(fault.get("chunked")),
                          record=lambda n: m.record(entry, "fault", status, n))
                return
            status_override = fault.get("status")
        route, status, payload, headers = self.route(m, req)
        headers.update(extra_headers)
        if status_override:
            status = status_override
        self.send(status, payload, headers, truncate=bool(fault and fault.get("truncate")),
                  record=lambda n: m.record(entry, route, status, n, req.samples))

    @staticmethod
    def log_entry(m, req):
        h = req.headers
        key = h.get("X-Vital-API-Key")
        mkey = h.get("X-Management-Key") or h.get("X-Vital-Org-Key")
        entry = {"time": now_iso(), "method": req.method, "path": req.path, "query": req.query,
                 "api_key": "absent" if key is None else ("valid" if key == m.api_key else "invalid"),
                 "management_key": "absent" if mkey is None else ("valid" if mkey == m.management_key else "invalid"),
                 "authorization": h.get("Authorization") is not None,
                 "user_agent": h.get("User-Agent"), "content_type": h.get("Content-Type"),
                 "accept": h.get("Accept"), "accept_encoding": h.get("Accept-Encoding"),
                 "body_length": len(req.body)}
        if req.body and not req.path.startswith("/v1/"):
            try:
                entry["body"] = json.loads(req.body)
            except ValueError:
                entry["body"] = req.body[:2048].decode("utf-8", "replace")
        return entry

    @staticmethod
    def route(m, req):
        path_matched = False
        for meth, rx, fn, auth, tmpl in ROUTES:
            mt = rx.match(req.path)
            if not mt:
                continue
            path_matched = True
            if meth != req.method:
                continue
            route = "%s %s" % (meth, tmpl)
            if auth == "data" and req.headers.get("X-Vital-API-Key") != m.api_key:
                return route, 401, {"detail": "Invalid API key"}, {}
            if auth == "mgmt" and (req.headers.get("X-Management-Key") or req.headers.get("X-Vital-Org-Key")) \
                    != m.management_key:
                return route, 401, {"detail": "Invalid management key"}, {}
            try:
                status, payload = fn(m, req, **mt.groupdict())
                return route, status, payload, {}
            except ApiError as e:
                return route, e.status, {"detail": e.detail}, dict(e.headers)
            except Exception as e:       # a mock bug: say so loudly, answer 500
                traceback.print_exc()
                return route, 500, {"detail": "mock internal error: %r" % e}, {}
        if path_matched:
            return None, 405, {"detail": "Method Not Allowed"}, {}
        return None, 404, {"detail": "Not Found"}, {}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        traceback.print_exc()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Mock Junction API (127.0.0.1 only)")
    p.add_argument("--port", type=int, required=True, help="port (0 = pick a free one; see --portfile)")
    p.add_argument("--portfile", help="write the bound port to this file (atomically)")
    p.add_argument("--api-key", default="sk_us_test_key", help="accepted X-Vital-API-Key")
    p.add_argument("--management-key", default="mg_test_key", help="accepted X-Management-Key")
    p.add_argument("--page-samples", type=int, default=10000, help="max samples per grouped-timeseries page")
    p.add_argument("--page-days", type=int, default=7, help="max days per grouped-timeseries page")
    p.add_argument("--density", action="append", default=[], metavar="SEG=N",
                   help="time slots per day per source for a timeseries segment (repeatable)")
    p.add_argument("--dense", action="store_true", help="heartrate at %d samples/day" % DENSE_HEARTRATE)
    p.add_argument("--cache-mb", type=int, default=512, help="page cache size (0 disables)")
    p.add_argument("--refresh-limit", type=int, default=8, help="POST /v2/user/refresh calls per hour per user")
    p.add_argument("--introspect-page-size", type=int, default=2,
                   help="(user, provider) pairs per introspection page")
    p.add_argument("--require-known-user", action="store_true",
                   help="data reads for users not created through POST /v2/user answer 404")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)
    args.density_overrides = {}
    for item in args.density:
        seg, _, n = item.partition("=")
        if seg not in SEGMENTS or not n.isdigit() or not 1 <= int(n) <= 86400:
            p.error("bad --density %r (SEG=N, N in 1..86400)" % item)
        args.density_overrides[seg] = int(n)
    if args.page_samples < 1 or args.page_days < 1:
        p.error("--page-samples and --page-days must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    mock = Mock(args)
    server = Server(("127.0.0.1", args.port), Handler)
    server.mock = mock
    port = server.server_address[1]
    if args.portfile:
        tmp = args.portfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.portfile)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.verbose:
        sys.stderr.write("mock_junction: listening on http://127.0.0.1:%d\n" % port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
