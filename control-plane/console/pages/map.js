// 地图: the region's 14 cities, or one city's counties, drawn as plain SVG from the GeoJSON
// shipped under /console/geo/ (converted once from the MIT-licensed echarts-china-*-js
// packages; see geo/README.md). Each area is a link coloured like the network view's node of
// the same division; no map library, the projection is a few lines of Mercator below.

import { s } from '../dom.js';
import { t } from '../i18n.js';

/** Divisions that have a map: the region (its cities) and each city (its counties). */
export function hasMap(division) {
  return division.level === 1 || division.level === 2;
}

const cache = new Map();

/** The boundaries below `code`, fetched once per page load. */
export function loadGeo(code) {
  if (!cache.has(code)) {
    const request = fetch(`/console/geo/${encodeURIComponent(code)}.geojson`, { cache: 'force-cache' })
      .then((response) => {
        if (!response.ok) throw new Error(`geo/${code}.geojson: ${response.status}`);
        return response.json();
      });
    // A failed fetch is not remembered: the next redraw tries again.
    request.catch(() => cache.delete(code));
    cache.set(code, request);
  }
  return cache.get(code);
}

const WIDTH = 1000;
const PADDING = 12;

/** Web Mercator's y for a latitude, in degrees-like units so that x and y share a scale. */
function mercatorY(latitude) {
  const radians = (latitude * Math.PI) / 180;
  return (Math.log(Math.tan(Math.PI / 4 + radians / 2)) * 180) / Math.PI;
}

function polygonsOf(geometry) {
  return geometry.type === 'Polygon' ? [geometry.coordinates] : geometry.coordinates;
}

/** A projection fitting every feature in a `WIDTH`-wide box; its height follows the shape. */
function fit(features) {
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const feature of features) {
    for (const polygon of polygonsOf(feature.geometry)) {
      for (const [longitude, latitude] of polygon[0]) {
        const y = mercatorY(latitude);
        minX = Math.min(minX, longitude);
        maxX = Math.max(maxX, longitude);
        minY = Math.min(minY, y);
        maxY = Math.max(maxY, y);
      }
    }
  }
  const scale = (WIDTH - 2 * PADDING) / (maxX - minX || 1);
  const height = Math.ceil((maxY - minY) * scale + 2 * PADDING);
  const project = ([longitude, latitude]) => [
    PADDING + (longitude - minX) * scale,
    PADDING + (maxY - mercatorY(latitude)) * scale,
  ];
  return { project, height };
}

/** Below this width or height (in map units) an area is drawn with a small label. */
const SMALL_AREA = 70;

/** The smaller side of the projected bounding box of the largest polygon's outer ring. */
function extent(geometry, project) {
  let best = 0;
  for (const polygon of polygonsOf(geometry)) {
    const points = polygon[0].map(project);
    const xs = points.map(([x]) => x);
    const ys = points.map(([, y]) => y);
    best = Math.max(best, Math.min(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)));
  }
  return best;
}

function pathData(geometry, project) {
  const parts = [];
  for (const polygon of polygonsOf(geometry)) {
    for (const ring of polygon) {
      parts.push(`M${ring.map((point) => project(point).map((value) => value.toFixed(1)).join(',')).join('L')}Z`);
    }
  }
  return parts.join('');
}

/**
 * The map of `data` (a `/api/v1/network` level whose division has a map) from `geo`: one
 * `<a data-code>` per area, coloured by the state of the matching child. A city links to its
 * own map, a county to the network view below it.
 */
export function mapView(data, geo) {
  const children = new Map(data.children.map((child) => [child.code, child]));
  const { project, height } = fit(geo.features);
  const areas = geo.features.map((feature) => {
    const { code, name, center } = feature.properties;
    // Too small an area (a city's urban districts) keeps its name only, in a smaller type.
    const small = extent(feature.geometry, project) < SMALL_AREA;
    const child = children.get(code) || { online: 0, total: 0, state: 'empty', link: { state: 'empty' } };
    const [labelX, labelY] = project(center);
    const href = data.division.level === 1 ? `#/network/${code}?view=map` : `#/network/${code}`;
    return s('a', {
      href,
      class: `area state-${child.state}${small ? ' area-small' : ''}`,
      dataset: { code, state: child.state, online: String(child.online), total: String(child.total) },
      'aria-label': t('network.node', { name, online: child.online, total: child.total, state: t(`state.${child.state}`) }),
    },
    s('title', {}, t('network.node', { name, online: child.online, total: child.total, state: t(`state.${child.state}`) })),
    s('path', { d: pathData(feature.geometry, project) }),
    s('text', { x: labelX.toFixed(1), y: labelY.toFixed(1), class: 'area-name' }, name),
    small ? null : s('text', { x: labelX.toFixed(1), y: (labelY + 18).toFixed(1), class: 'area-count' }, `${child.online}/${child.total}`));
  });
  return s('svg', {
    id: 'network-map',
    class: 'map',
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: 'group',
    'aria-label': t('network.map.label', { name: data.division.name }),
  }, areas);
}
