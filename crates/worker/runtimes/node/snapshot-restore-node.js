// SnapStart's runtime hooks for nimbus's Node.js runtime, `require('snapshot-restore-node')`,
// with the names and order of Lambda's hooks for its other runtimes:
// - registerBeforeSnapshot(fn, ...args): runs once, after the version's initialisation and
//   before its snapshot is made; hooks run in the reverse order of registration.
// - registerAfterRestore(fn, ...args): runs in every environment restored from the snapshot,
//   before its first invocation; hooks run in the order of registration.
// A hook may return a promise, which is awaited. The registry lives on the global object, so a
// function that bundles its own copy of this module registers in the same place.
'use strict';

const KEY = Symbol.for('nimbus.snapstart.hooks');
const hooks = globalThis[KEY] || (globalThis[KEY] = { before: [], after: [] });

function check(fn) {
  if (typeof fn !== 'function') throw new TypeError('a runtime hook must be a function');
}

module.exports = {
  registerBeforeSnapshot(fn, ...args) {
    check(fn);
    hooks.before.push([fn, args]);
    return fn;
  },
  registerAfterRestore(fn, ...args) {
    check(fn);
    hooks.after.push([fn, args]);
    return fn;
  },
  getBeforeSnapshot() {
    return hooks.before.slice().reverse();
  },
  getAfterRestore() {
    return hooks.after.slice();
  },
};
