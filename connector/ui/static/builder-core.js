/* The flow builder's shared pieces: its state, DOM helpers, the catalog, the connection field.
 *
 * The builder is plain scripts that builder.html loads in this order, each an IIFE that adds
 * what it defines to window.connector.builderParts (B) and takes what it uses from the files
 * before it: builder-core.js, builder-picker.js, builder-inputs.js, builder-filters.js,
 * builder-testing.js, builder-steps.js and builder.js (the trigger card, saving, start-up).
 * builder.js defines B.renderAll and B.placeErrors last, so the others call them through B.
 */
(function () {
  "use strict";

  var C = window.connector;
  var TEMPLATE = /\{\{|\{%/;

  // data (#builder-data), def (the definition being edited) and form are set by init (builder.js)
  var state = {data: null, def: null, form: null, connections: [], dirty: false};
  var triggers = {}, actions = {}, searches = {}, apps = {};
  var ops = {}, opList = [];
  var samples = {trigger: null, steps: {}};  // steps: name -> {output, source}
  var ui = new WeakMap();  // model object -> {modes: {field: "text"|"list"}, test: node}
  var invalid = {};  // place -> message (client-side: JSON that does not parse)
  var nextId = 0;
  var B = {};

  // -- small helpers -----------------------------------------------------------------------

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) {
        return;
      }
      if (key === "class") {
        el.className = value;
      } else if (key === "text") {
        el.textContent = value;
      } else if (key === "for") {
        el.htmlFor = value;
      } else if (key === "value") {
        el.value = value;
      } else if (value === true) {
        el.setAttribute(key, "");
      } else {
        el.setAttribute(key, String(value));
      }
    });
    [].concat(children || []).forEach(function (child) {
      if (child === null || child === undefined || child === false) {
        return;
      }
      el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return el;
  }

  function uid(prefix) {
    nextId += 1;
    return (prefix || "b") + "-" + nextId;
  }

  function clone(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  function stateOf(obj) {
    var st = ui.get(obj);
    if (!st) {
      st = {modes: {}};
      ui.set(obj, st);
    }
    return st;
  }

  function hasTemplate(value) {
    return typeof value === "string" && TEMPLATE.test(value);
  }

  function isObject(value) {
    return value !== null && typeof value === "object";
  }

  function markDirty() {
    var box = document.getElementById("flash");
    if (box && !box.hidden && /\berror\b/.test(box.className)) {
      box.hidden = true;  // it was about the last save; this edit may be the fix
    }
    state.dirty = true;
    document.getElementById("b-dirty").textContent = "Unsaved changes";
  }

  function markClean() {
    state.dirty = false;
    document.getElementById("b-dirty").textContent = "";
  }

  function inputsOf(owner) {
    if (!isObject(owner.inputs) || Array.isArray(owner.inputs)) {
      owner.inputs = {};
    }
    return owner.inputs;
  }

  function appLabel(key) {
    return apps[key] ? apps[key].label : key;
  }

  /* An error slot (<p class="field-error" data-error-for="place">) with its id. */
  function slot(place, id) {
    return h("p", {"class": "field-error", id: id, "data-error-for": place});
  }

  function field(labelText, control, opts) {
    opts = opts || {};
    var id = control.id || (control.id = uid("bf"));
    var errId = id + "-error";
    var helpId = opts.help ? id + "-help" : null;
    control.setAttribute("aria-describedby", [helpId, errId].filter(Boolean).join(" "));
    var label = h("label", {"for": id}, [labelText, opts.required ?
      h("span", {"class": "req", "aria-hidden": "true", text: " *"}) : null]);
    var row = opts.extra && opts.extra.length ?
      h("div", {"class": "input-row"}, [control].concat(opts.extra)) : control;
    return h("div", {"class": "field" + (opts.cls ? " " + opts.cls : "")}, [
      label, row,
      opts.help ? h("p", {"class": "help", id: helpId}, opts.help) : null,
      slot(opts.place, errId)]);
  }

  // -- the catalog -------------------------------------------------------------------------

  function indexCatalog() {
    state.data.apps.forEach(function (app) {
      apps[app.key] = app;
      app.triggers.forEach(function (t) { triggers[t.key] = t; });
      app.actions.forEach(function (a) { actions[a.key] = a; });
      app.searches.forEach(function (s) { actions[s.key] = s; searches[s.key] = s; });
    });
    state.data.ops.forEach(function (o) { ops[o.op] = o; opList.push(o); });
    state.connections = state.data.connections.slice();
  }

  /* A <select> of components grouped by app (<optgroup>), with a first empty choice. */
  function componentSelect(kinds, current, placeholder) {
    var select = h("select", {}, [h("option", {value: "", text: placeholder})]);
    var known = false;
    state.data.apps.forEach(function (app) {
      var items = [];
      kinds.forEach(function (kind) { items = items.concat(app[kind]); });
      if (!items.length) {
        return;
      }
      var group = h("optgroup", {label: app.label});
      items.forEach(function (c) {
        var opt = h("option", {value: c.key, text: c.label + (c.kind === "search" ? " (search)" : "")});
        if (c.key === current) {
          opt.selected = true;
          known = true;
        }
        group.appendChild(opt);
      });
      select.appendChild(group);
    });
    if (current && !known) {
      select.appendChild(h("option", {value: current, selected: true,
                                      text: current + " (not installed)"}));
    }
    return select;
  }

  function usesConnection(component) {
    if (!component) {
      return false;
    }
    if (component.any_connection) {
      return true;
    }
    var app = apps[component.app];
    return Boolean(app && app.credentials.length && component.needs_connection !== false);
  }

  function connectionsFor(component) {
    return state.connections.filter(function (c) {
      return component.any_connection || c.app === component.app;
    });
  }

  /* Choose the only connection there is for a newly chosen trigger or action. */
  function autoConnection(owner, component) {
    if (!usesConnection(component) || component.any_connection || owner.connection) {
      return;
    }
    var mine = connectionsFor(component);
    if (mine.length === 1) {
      owner.connection = mine[0].name;
    }
  }

  function refreshConnections(button) {
    var all = [];
    function page(n) {
      return C.api("GET", "/connections?limit=100&page=" + n).then(function (answer) {
        all = all.concat(answer.data.map(function (c) { return {name: c.name, app: c.app}; }));
        return n < answer.pagination.pages ? page(n + 1) : all;
      });
    }
    C.busy(button, page(1)).then(function (list) {
      state.connections = list;
      B.renderAll();
      C.flash("Connections refreshed: " + list.length + " in all.", "ok", true);
    }, function (err) {
      C.flash("Could not list the connections: " + err.message, "error", true);
    });
  }

  function connectionField(owner, component, place) {
    var optional = Boolean(component.any_connection);
    var select = h("select", {}, [h("option", {value: "", text: optional ?
      "(none)" : "Choose a connection…"})]);
    var mine = connectionsFor(component);
    var found = false;
    mine.forEach(function (c) {
      var opt = h("option", {value: c.name, text: component.any_connection ?
        c.name + " (" + appLabel(c.app) + ")" : c.name});
      if (c.name === owner.connection) {
        opt.selected = true;
        found = true;
      }
      select.appendChild(opt);
    });
    if (owner.connection && !found) {
      select.appendChild(h("option", {value: owner.connection, selected: true,
                                      text: owner.connection + " (not found)"}));
    }
    select.setAttribute("data-connection-for", place);
    select.addEventListener("change", function () {
      if (select.value) {
        owner.connection = select.value;
      } else {
        delete owner.connection;
      }
      markDirty();
      B.renderAll();  // dropdowns filled by a search use the connection
    });
    var refresh = h("button", {type: "button", "class": "small", title: "Refresh the list",
                               "aria-label": "Refresh the connections", text: "↻"});
    refresh.addEventListener("click", function () { refreshConnections(refresh); });
    var link = h("a", {href: state.form.getAttribute("data-connections-url") + "#add-heading",
                       target: "_blank", rel: "noopener", text: "Add a connection"});
    var help = h("span", {}, [
      component.any_connection ? "Optional: any connection's credentials and base URL. " :
        "Only " + appLabel(component.app) + " connections" +
        (mine.length ? ". " : ": there is none yet. "),
      link, " (opens a new tab), then ↻."]);
    return field("Connection", select, {required: !optional, help: help,
                                         place: place + ".connection", extra: [refresh]});
  }

  window.connector.builderParts = Object.assign(B, {
    state: state, triggers: triggers, actions: actions, searches: searches,
    ops: ops, opList: opList, samples: samples, invalid: invalid,
    h: h, uid: uid, clone: clone, stateOf: stateOf, hasTemplate: hasTemplate,
    isObject: isObject, markDirty: markDirty, markClean: markClean, inputsOf: inputsOf,
    appLabel: appLabel, slot: slot, field: field, indexCatalog: indexCatalog,
    componentSelect: componentSelect, usesConnection: usesConnection,
    autoConnection: autoConnection, connectionField: connectionField
  });
}());
