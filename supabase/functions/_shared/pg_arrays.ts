// PostgreSQL's built-in array types, declared for postgres.js so that it needs no start-up type fetch.
//
// With fetch_types on (its default), postgres.js runs a pg_type query as the first statement of every new
// connection and drops that query's promise: a backend terminated during it (a failover, a pooler restart,
// pg_terminate_backend) becomes an unhandled rejection that ends the process (porsager/postgres #1192,
// #1205, #1223; still so in 3.4.9, the newest release). db.ts turns the fetch off and passes these instead:
// for every built-in array type the serializer and parser postgres.js would have installed from that
// query, so an array sent or read is byte for byte what it was (tests/faults/pg_arrays.test.ts compares
// the two clients). Built-in OIDs are fixed by PostgreSQL; arrays of our own types (whose OIDs differ per
// database) are not covered: pass those as text and cast in SQL.

/** [element OID, array OID] of PostgreSQL's built-in types that have an array type (catalog row types left out). */
const BUILTIN_ARRAYS: readonly (readonly [number, number])[] = [
  [16, 1000], [17, 1001], [18, 1002], [19, 1003], [20, 1016], [21, 1005], [22, 1006], [23, 1007], [24, 1008],
  [25, 1009], [26, 1028], [27, 1010], [28, 1011], [29, 1012], [30, 1013], [114, 199], [142, 143], [600, 1017],
  [601, 1018], [602, 1019], [603, 1020], [604, 1027], [628, 629], [650, 651], [700, 1021], [701, 1022],
  [718, 719], [774, 775], [790, 791], [829, 1040], [869, 1041], [1033, 1034], [1042, 1014], [1043, 1015],
  [1082, 1182], [1083, 1183], [1114, 1115], [1184, 1185], [1186, 1187], [1266, 1270], [1560, 1561],
  [1562, 1563], [1700, 1231], [1790, 2201], [2202, 2207], [2203, 2208], [2204, 2209], [2205, 2210],
  [2206, 2211], [2275, 1263], [2950, 2951], [2970, 2949], [3220, 3221], [3614, 3643], [3615, 3645],
  [3642, 3644], [3734, 3735], [3769, 3770], [3802, 3807], [3904, 3905], [3906, 3907], [3908, 3909],
  [3910, 3911], [3912, 3913], [3926, 3927], [4072, 4073], [4089, 4090], [4096, 4097], [4191, 4192],
  [4451, 6150], [4532, 6151], [4533, 6152], [4534, 6153], [4535, 6155], [4536, 6157], [5038, 5039], [5069, 271],
];

type Convert = (x: any) => unknown;

// postgres.js's own element handlers (its `types` defaults); every other element type is sent with
// '' + x and read as a string, as postgres.js does.
const toDate = (x: unknown) => (x instanceof Date ? x : new Date(x as string)).toISOString();
const ELEMENT_SERIALIZERS: Record<number, Convert> = {
  25: (x) => "" + x,
  21: (x) => "" + x, 23: (x) => "" + x, 26: (x) => "" + x, 700: (x) => "" + x, 701: (x) => "" + x,
  114: (x) => JSON.stringify(x), 3802: (x) => JSON.stringify(x),
  16: (x) => (x === true ? "t" : "f"),
  1082: toDate, 1114: toDate, 1184: toDate,
  17: (x) => "\\x" + bytesToHex(x),
};
const ELEMENT_PARSERS: Record<number, Convert> = {
  21: (x) => +x, 23: (x) => +x, 26: (x) => +x, 700: (x) => +x, 701: (x) => +x,
  114: (x) => JSON.parse(x), 3802: (x) => JSON.parse(x),
  16: (x) => x === "t",
  1082: (x) => new Date(x), 1114: (x) => new Date(x), 1184: (x) => new Date(x),
  17: (x) => hexToBytes(x.slice(2)),
};

function bytesToHex(x: ArrayLike<number> | string): string {
  const bytes = typeof x === "string" ? new TextEncoder().encode(x) : Uint8Array.from(x as ArrayLike<number>);
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

// Only box[] (1020) separates its elements with ';'.
const delimiterOf = (array: number) => (array === 1020 ? ";" : ",");

const escapeElement = (x: string) => x.replace(/\\/g, "\\\\").replace(/"/g, '\\"');

/** An array literal as postgres.js writes it: every element quoted, null unquoted, nested arrays nested. */
export function serializeArray(xs: unknown, element: Convert | undefined, array: number, undefinedAs?: unknown): unknown {
  if (!Array.isArray(xs)) return xs;
  if (!xs.length) return "{}";
  const delimiter = delimiterOf(array);
  if (Array.isArray(xs[0]) && !(xs[0] as { type?: unknown }).type) {
    return "{" + xs.map((x) => serializeArray(x, element, array, undefinedAs)).join(delimiter) + "}";
  }
  return "{" + xs.map((x) => {
    if (x === undefined) {
      x = undefinedAs;
      if (x === undefined) throw new Error("UNDEFINED_VALUE: Undefined values are not allowed");
    }
    if (x === null) return "null";
    const v = (x as { type?: unknown; value?: unknown }).type ? (x as { value: unknown }).value : x;
    return '"' + escapeElement(element ? String(element(v)) : "" + v) + '"';
  }).join(delimiter) + "}";
}

/** An array literal read as postgres.js reads it (including its habit of passing unquoted NULL to the element parser). */
export function parseArray(literal: string, element: Convert | undefined, array: number): unknown[] {
  // postgres.js hands its array parsers the text after the opening brace
  const s = { i: 0, last: 0, str: "", quoted: false, char: "", p: "" };
  const x = literal.slice(1);
  const delimiter = delimiterOf(array);
  const loop = (): unknown[] => {
    const xs: unknown[] = [];
    for (; s.i < x.length; s.i++) {
      s.char = x[s.i];
      if (s.quoted) {
        if (s.char === "\\") {
          s.str += x[++s.i];
        } else if (s.char === '"') {
          xs.push(element ? element(s.str) : s.str);
          s.str = "";
          s.quoted = x[s.i + 1] === '"';
          s.last = s.i + 2;
        } else {
          s.str += s.char;
        }
      } else if (s.char === '"') {
        s.quoted = true;
      } else if (s.char === "{") {
        s.last = ++s.i;
        xs.push(loop());
      } else if (s.char === "}") {
        s.quoted = false;
        if (s.last < s.i) xs.push(element ? element(x.slice(s.last, s.i)) : x.slice(s.last, s.i));
        s.last = s.i + 1;
        break;
      } else if (s.char === delimiter && s.p !== "}" && s.p !== '"') {
        xs.push(element ? element(x.slice(s.last, s.i)) : x.slice(s.last, s.i));
        s.last = s.i + 1;
      }
      s.p = s.char;
    }
    if (s.last < s.i) xs.push(element ? element(x.slice(s.last, s.i + 1)) : x.slice(s.last, s.i + 1));
    return xs;
  };
  return loop();
}

export interface PgType {
  to: number;
  from: number[];
  serialize: (x: any) => unknown;
  parse: (x: any) => unknown;
}

/** The `types` option for postgres.js with fetch_types off: one entry per built-in array type. */
export function builtinArrayTypes(): Record<string, PgType> {
  const out: Record<string, PgType> = {};
  for (const [elem, arr] of BUILTIN_ARRAYS) {
    const serialize = ELEMENT_SERIALIZERS[elem];
    const parse = ELEMENT_PARSERS[elem];
    out[`array_${arr}`] = {
      to: arr,
      from: [arr],
      serialize: (xs) => serializeArray(xs, serialize, arr),
      parse: (x) => parseArray(x, parse, arr),
    };
  }
  return out;
}

/** The element OID → array OID map postgres.js keeps after its type fetch (sql.array(x) looks arrays up in it). */
export const ARRAY_OF: Readonly<Record<number, number>> = Object.fromEntries(BUILTIN_ARRAYS);
