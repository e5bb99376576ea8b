// Trusted code run in every app context before the app. It guards the
// native operations that can allocate without bound in one step, which the
// per-poll memory check cannot see (shared/notes/js-budget.md, Q4).
(function (maxChars, maxElements, maxRegexInput) {
  'use strict';
  function wrap(proto, name, check) {
    var original = proto[name];
    Object.defineProperty(proto, name, {
      value: function () {
        check(this, arguments);
        return original.apply(this, arguments);
      },
      writable: true,
      enumerable: false,
      configurable: true
    });
  }
  function tooBig(what, size, limit) {
    return new RangeError(what + ': result of ' + size + ' exceeds the memory budget (' + limit + ')');
  }
  wrap(String.prototype, 'repeat', function (s, args) {
    var n = Number(args[0]) * String(s).length;
    if (n > maxChars) { throw tooBig('String.prototype.repeat', n + ' characters', maxChars + ' characters'); }
  });
  wrap(String.prototype, 'padStart', function (s, args) {
    if (Number(args[0]) > maxChars) { throw tooBig('String.prototype.padStart', args[0] + ' characters', maxChars + ' characters'); }
  });
  wrap(String.prototype, 'padEnd', function (s, args) {
    if (Number(args[0]) > maxChars) { throw tooBig('String.prototype.padEnd', args[0] + ' characters', maxChars + ' characters'); }
  });
  wrap(Array.prototype, 'fill', function (a) {
    if (a.length > maxElements) { throw tooBig('Array.prototype.fill', a.length + ' elements', maxElements + ' elements'); }
  });
  wrap(Array.prototype, 'join', function (a) {
    if (a.length > maxElements) { throw tooBig('Array.prototype.join', a.length + ' elements', maxElements + ' elements'); }
  });
  // Regular expressions: one native call matches a whole input, and no
  // budget check runs inside it. test, match, matchAll, replace, search
  // and split all go through exec (RegExpExec), so one guard covers them;
  // the input is converted once, as the original would.
  var exec = RegExp.prototype.exec;
  Object.defineProperty(RegExp.prototype, 'exec', {
    value: function (s) {
      var input = String(s);
      if (input.length > maxRegexInput) {
        throw new RangeError('RegExp: an input of ' + input.length +
          ' characters exceeds the limit for regular expressions (' + maxRegexInput + ' characters)');
      }
      return exec.call(this, input);
    },
    writable: true,
    enumerable: false,
    configurable: true
  });
})
