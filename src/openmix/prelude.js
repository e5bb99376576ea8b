// Trusted code run in every app context before the app (see guards.rs).
// It guards the native operations whose allocation or recursion an
// argument or a `length` decides, which the per-poll budget checks cannot
// see (shared/notes/js-budget.md, Q4), with a RangeError naming the budget.
//
// Two rules make the guards hold against the app:
// - everything a guard uses is captured below, while the context is still
//   pristine: no guard looks up a global, a prototype method, `.call` or
//   `.apply` when it runs, so an app that replaces them gets nothing;
// - a guard converts each argument once and passes the converted value to
//   the original, and an array's `length` is read once: for anything but a
//   real Array the original sees that same length through a proxy or a
//   copy, so a `valueOf` or getter cannot answer small to the guard and
//   huge to the original.
(function (maxChars, maxElements, maxRepeat, maxRegexInput, native) {
  'use strict';
  var apply = Reflect.apply;
  var reflectGet = Reflect.get;
  var reflectOwnKeys = Reflect.ownKeys;
  var defineProperty = Object.defineProperty;
  var getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  var getPrototypeOf = Object.getPrototypeOf;
  var create = Object.create;
  var toObject = Object;
  var isArray = Array.isArray;
  var toStr = String;
  var floor = Math.floor;
  var RangeErr = RangeError;
  var ProxyCtor = Proxy;
  var revocable = Proxy.revocable;
  var iteratorKey = Symbol.iterator;
  var global = native.global;
  var classify = native.classify;     // 1 Array, 2 String/Number wrapper, 3 other wrapper, 0 else
  var copyList = native.copyList;     // a new Array of o[0 .. len), each read once
  var checkStack = native.checkStack; // RangeError when the stack is nearly used up
  var flatDepth = native.flatDepth;   // levels `flat` may recurse with the stack left
  var joinChecked = native.join;      // join with a size limit
  var sortWith = native.sortWith;     // a merge sort with the app's comparator
  var MAX_LENGTH = 9007199254740991;

  // Replaces target[key] with make(original), keeping name and length.
  function install(target, key, name, make) {
    var original = target[key];
    var guard = make(original);
    defineProperty(guard, 'name', { value: name });
    defineProperty(guard, 'length', { value: original.length });
    defineProperty(target, key, { value: guard, writable: true, enumerable: false, configurable: true });
    return original;
  }
  function tooBig(what, amount, limit) {
    return new RangeErr(what + ': ' + amount + ' exceeds the memory budget (' + limit + ')');
  }
  // ToIntegerOrInfinity, converting v once (ToNumber: a Symbol or BigInt
  // throws the original's TypeError).
  function toInteger(v) {
    var n = +v;
    if (n !== n) { return 0; }
    return n < 0 ? -floor(-n) : floor(n);
  }
  function toLength(v) {
    var n = toInteger(v);
    return n <= 0 ? 0 : (n > MAX_LENGTH ? MAX_LENGTH : n);
  }
  // ToString(RequireObjectCoercible(this)), once; undefined when the
  // original must throw its own TypeError.
  function thisString(self) {
    if (self === null || self === undefined || typeof self === 'symbol') { return undefined; }
    return toStr(self);
  }
  // The length an array method will see, read once.
  function lengthOf(o) {
    return classify(o) === 1 ? o.length : toLength(o.length);
  }
  // Calls an Array.prototype method on o, whose length was read once as
  // len: a real Array's length is a data property that no code runs to
  // read; anything else sees len pinned by a proxy.
  function withLength(original, o, len, args) {
    if (classify(o) === 1) { return apply(original, o, args); }
    var handler = create(null);
    handler.get = function (t, key, receiver) {
      return key === 'length' ? len : reflectGet(t, key, receiver);
    };
    var p = new ProxyCtor(o, handler);
    var r = apply(original, p, args);
    return r === p ? o : r;
  }
  function checkElements(what, n) {
    if (n > maxElements) { throw tooBig(what, 'a result of ' + n + ' elements', maxElements + ' elements'); }
  }
  // An argument list (array-like) with its length read once.
  function argList(what, args) {
    if (typeof args !== 'object' && typeof args !== 'function') { return args; }
    if (args === null) { return args; }
    var c = classify(args);
    var len = c === 1 ? args.length : toLength(args.length);
    checkElements(what, len);
    return c === 1 ? args : copyList(args, len);
  }

  // ---------------------------------------------------------- strings

  var stringProto = String.prototype;
  install(stringProto, 'repeat', 'repeat', function (repeat) {
    return function (count) {
      var s = thisString(this);
      if (s === undefined) { return apply(repeat, this, [count]); }
      var n = toInteger(count);
      if (s.length > 0 && n > 0 && n !== Infinity) {
        if (n > maxRepeat) {
          throw tooBig('String.prototype.repeat', 'a count of ' + n, maxRepeat + ' repetitions');
        }
        if (n * s.length > maxChars) {
          throw tooBig('String.prototype.repeat', 'a result of ' + n * s.length + ' characters', maxChars + ' characters');
        }
      }
      return apply(repeat, s, [n]);
    };
  });
  function pad(name) {
    install(stringProto, name, name, function (original) {
      return function (maxLength, fillString) {
        var s = thisString(this);
        if (s === undefined) { return apply(original, this, [maxLength, fillString]); }
        var n = toLength(maxLength);
        var fill = fillString;
        if (fill !== undefined && typeof fill !== 'symbol') { fill = toStr(fill); }
        if (n > s.length && n > maxChars && typeof fill !== 'symbol' && (fill === undefined || fill.length > 0)) {
          throw tooBig('String.prototype.' + name, 'a result of ' + n + ' characters', maxChars + ' characters');
        }
        return apply(original, s, [n, fill]);
      };
    });
  }
  pad('padStart');
  pad('padEnd');

  // ----------------------------------------------------------- arrays

  var arrayProto = Array.prototype;
  install(arrayProto, 'fill', 'fill', function (fill) {
    return function (value, start, end) {
      if (this === null || this === undefined) { return apply(fill, this, [value, start, end]); }
      var o = toObject(this);
      var k = toInteger(start);
      var e = end === undefined ? undefined : toInteger(end);
      var len = lengthOf(o);
      var from = k < 0 ? (len + k > 0 ? len + k : 0) : (k < len ? k : len);
      var to = e === undefined ? len : (e < 0 ? (len + e > 0 ? len + e : 0) : (e < len ? e : len));
      checkElements('Array.prototype.fill', to - from);
      return withLength(fill, o, len, [value, k, e]);
    };
  });
  // Methods that read or allocate every index up to `length` (plus
  // `extra` elements).
  function wholeLengthCall(original, name, self, args, extra) {
    if (self === null || self === undefined) { return apply(original, self, args); }
    var o = toObject(self);
    var len = lengthOf(o);
    checkElements('Array.prototype.' + name, len + extra);
    return withLength(original, o, len, args);
  }
  function wholeLength(name, extra) {
    install(arrayProto, name, name, function (original) {
      return function () {
        var args = [];
        for (var i = 0; i < arguments.length; i++) {
          defineProperty(args, i, { value: arguments[i], writable: true, enumerable: true, configurable: true });
        }
        return wholeLengthCall(original, name, this, args, extra ? extra(args) : 0);
      };
    });
  }
  // sort and toSorted with a comparator sort natively with our own merge
  // sort (guards.rs: boa's panics on a comparator that is not a total
  // order, such as the usual `() => Math.random() - 0.5` shuffle).
  function sorting(name, mode) {
    install(arrayProto, name, name, function (original) {
      return function (comparefn) {
        if (comparefn === undefined || typeof comparefn !== 'function' ||
            this === null || this === undefined) {
          return wholeLengthCall(original, name, this, [comparefn], 0);
        }
        var o = toObject(this);
        var len = lengthOf(o);
        checkElements('Array.prototype.' + name, len);
        return sortWith(o, len, comparefn, mode);
      };
    });
  }
  sorting('sort', 0);
  sorting('toSorted', 1);
  wholeLength('toReversed');
  wholeLength('with');
  wholeLength('toSpliced', function (args) { return args.length > 2 ? args.length - 2 : 0; });

  // The list separator of toLocaleString (", " unless boa's Intl says
  // otherwise), from the original while it is still boa's own.
  var localeSep = apply(arrayProto.toLocaleString, ['', ''], []);
  function joining(target, label, name, lengthOfThis, locale) {
    var what = label + '.prototype.' + name;
    install(target, name, name, function (original) {
      var sep = locale ? localeSep : ',';
      return function (a, b) {
        checkStack(what);
        if (this === null || this === undefined) { return apply(original, this, arguments); }
        var len = lengthOfThis(this);
        if (len === undefined) { return apply(original, this, arguments); }
        var s = sep;
        if (!locale && a !== undefined) {
          if (typeof a === 'symbol') { return apply(original, this, [a]); }
          s = toStr(a);
        }
        checkElements(what, len);
        return joinChecked(this, len, s, locale, a, b);
      };
    });
  }
  function arrayLengthOf(self) { return lengthOf(toObject(self)); }
  joining(arrayProto, 'Array', 'join', arrayLengthOf, false);
  joining(arrayProto, 'Array', 'toLocaleString', arrayLengthOf, true);

  install(arrayProto, 'flat', 'flat', function (flat) {
    return function (depth) {
      var d = depth === undefined ? 1 : toInteger(depth);
      var most = flatDepth();
      return apply(flat, this, [d > most ? most : d]);
    };
  });

  install(Array, 'from', 'from', function (from) {
    return function (items, mapfn, thisArg) {
      if (items === null || items === undefined) { return apply(from, this, arguments); }
      var iterate = items[iteratorKey];
      var source;
      if (iterate !== undefined && iterate !== null) {
        source = create(null);
        source[iteratorKey] = function () { return apply(iterate, items, []); };
      } else {
        var o = toObject(items);
        var len = lengthOf(o);
        checkElements('Array.from', len);
        var handler = create(null);
        handler.get = function (t, key, receiver) {
          if (key === 'length') { return len; }
          if (key === iteratorKey) { return undefined; }
          return reflectGet(t, key, receiver);
        };
        source = new ProxyCtor(o, handler);
      }
      return arguments.length > 1 ? apply(from, this, [source, mapfn, thisArg]) : apply(from, this, [source]);
    };
  });

  // Typed arrays: their length is bounded by their buffer (the host
  // limits buffers to the memory budget), but join, toLocaleString and
  // sort keep 8 to 16 bytes per element on top.
  var typedProto = getPrototypeOf(Uint8Array.prototype);
  var typedLength = getOwnPropertyDescriptor(typedProto, 'length').get;
  function typedLengthOf(self) {
    try { return apply(typedLength, self, []); } catch (e) { return undefined; }
  }
  joining(typedProto, 'TypedArray', 'join', typedLengthOf, false);
  joining(typedProto, 'TypedArray', 'toLocaleString', typedLengthOf, true);
  var typedToSorted = typedProto.toSorted;
  function typedSorting(name) {
    install(typedProto, name, name, function (original) {
      return function (comparefn) {
        var len = typedLengthOf(this);
        if (len === undefined) { return apply(original, this, [comparefn]); }
        checkElements('TypedArray.prototype.' + name, len);
        if (comparefn === undefined || typeof comparefn !== 'function') {
          return apply(original, this, [comparefn]);
        }
        // toSorted: a copy of the same type (sorted by value), overwritten.
        var dst = name === 'sort' ? this : apply(typedToSorted, this, []);
        return sortWith(this, len, comparefn, 2, dst);
      };
    });
  }
  typedSorting('sort');
  typedSorting('toSorted');

  // ------------------------------------------------- argument lists

  // f.apply(thisArg, list), Reflect.apply and Reflect.construct make a
  // list of list.length elements at once.
  install(Function.prototype, 'apply', 'apply', function (original) {
    return function (thisArg, args) {
      return apply(original, this, [thisArg, argList('Function.prototype.apply', args)]);
    };
  });
  install(Reflect, 'apply', 'apply', function (original) {
    return function (target, thisArg, args) {
      return apply(original, Reflect, [target, thisArg, argList('Reflect.apply', args)]);
    };
  });
  install(Reflect, 'construct', 'construct', function (original) {
    return function (target, args, newTarget) {
      var list = argList('Reflect.construct', args);
      return arguments.length > 2 ? apply(original, Reflect, [target, list, newTarget]) : apply(original, Reflect, [target, list]);
    };
  });
  // A Proxy's ownKeys trap result is such a list too: the handler the
  // proxy gets inherits every trap from the app's and checks that one.
  function guardHandler(h) {
    if ((typeof h !== 'object' && typeof h !== 'function') || h === null) { return h; }
    var g = create(h);
    defineProperty(g, 'ownKeys', {
      value: function (t) {
        var trap = h.ownKeys;
        if (trap === undefined || trap === null) { return reflectOwnKeys(t); }
        return argList('Proxy ownKeys trap', apply(trap, g, [t]));
      }
    });
    return g;
  }
  var GuardedProxy = function Proxy(target, handler) {
    if (new.target === undefined) { return apply(ProxyCtor, undefined, [target, handler]); }
    return new ProxyCtor(target, guardHandler(handler));
  };
  defineProperty(GuardedProxy, 'length', { value: 2 });
  defineProperty(GuardedProxy, 'revocable', {
    value: function revocable_(target, handler) {
      return apply(revocable, ProxyCtor, [target, guardHandler(handler)]);
    },
    writable: true, enumerable: false, configurable: true
  });
  defineProperty(GuardedProxy.revocable, 'name', { value: 'revocable' });
  defineProperty(global, 'Proxy', { value: GuardedProxy, writable: true, enumerable: false, configurable: true });

  // ------------------------------------------------------------- JSON

  // JSON.stringify: a function replacer sees every value before it is
  // serialized, so the guard runs as one (calling the app's replacer, or
  // applying its property list, itself): it checks each array's length
  // (a Proxy of an array is copied at that length) and the stack.
  install(JSON, 'stringify', 'stringify', function (stringify) {
    return function (value, replacer, space) {
      var user = typeof replacer === 'function' ? replacer : undefined;
      var keys, count = 0;
      if (user === undefined && isArray(replacer)) {
        keys = create(null);
        var seen = create(null);
        var list = argList('JSON.stringify', replacer);
        var n = list.length;
        for (var i = 0; i < n; i++) {
          var v = list[i], item;
          if (typeof v === 'string') { item = v; }
          else if (typeof v === 'number' || (typeof v === 'object' && classify(v) === 2)) { item = toStr(v); }
          if (item !== undefined && seen[item] !== true) { seen[item] = true; keys[count++] = item; }
        }
      }
      function pick(o) {
        var out = {};
        for (var j = 0; j < count; j++) {
          var x = o[keys[j]];
          if (x !== undefined) {
            defineProperty(out, keys[j], { value: x, writable: true, enumerable: true, configurable: true });
          }
        }
        return out;
      }
      function guard(key, v) {
        checkStack('JSON.stringify');
        if (user !== undefined) { v = apply(user, this, [key, v]); }
        if (typeof v === 'object' && v !== null) {
          var c = classify(v);
          if (c === 1) { checkElements('JSON.stringify', v.length); }
          else if (c === 0 && isArray(v)) { v = argList('JSON.stringify', v); }
          else if (c === 0 && keys !== undefined) { v = pick(v); }
        }
        return v;
      }
      return apply(stringify, this, [value, guard, space]);
    };
  });

  // ---------------------------------------------- regular expressions

  // One native call matches a whole input, and no budget check runs
  // inside it: every entry point that takes an input refuses a long one.
  // (Guarding exec alone is not enough: a RegExp whose own `exec` is not
  // callable is matched by the builtin directly.)
  var regexpProto = RegExp.prototype;
  function regexEntry(key, name) {
    install(regexpProto, key, name, function (original) {
      return function (s, b) {
        if (typeof s === 'symbol') { return apply(original, this, arguments); }
        var input = toStr(s);
        if (input.length > maxRegexInput) {
          throw new RangeErr('RegExp: an input of ' + input.length +
            ' characters exceeds the limit for regular expressions (' + maxRegexInput + ' characters)');
        }
        return arguments.length > 1 ? apply(original, this, [input, b]) : apply(original, this, [input]);
      };
    });
  }
  regexEntry('exec', 'exec');
  regexEntry('test', 'test');
  regexEntry(Symbol.match, '[Symbol.match]');
  regexEntry(Symbol.matchAll, '[Symbol.matchAll]');
  regexEntry(Symbol.replace, '[Symbol.replace]');
  regexEntry(Symbol.search, '[Symbol.search]');
  regexEntry(Symbol.split, '[Symbol.split]');
})
