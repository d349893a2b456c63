/* The flow builder (/ui/flows/new, /ui/flows/<name>/edit).
 *
 * One model, two views: the page edits the flow's definition (the object the YAML file,
 * GET /api/v1/flows/<name> and the export hold) in place and saves it whole with
 * POST /api/v1/flows or PUT /api/v1/flows/<name>. Keys it has no editor for (on_failure,
 * concurrency, anything a later version adds) are kept as they are; a value is converted
 * only when someone edits it, so a flow opened and saved unchanged is saved unchanged.
 *
 * Samples: the trigger's (tested, else the catalog's) and each step's (its test output,
 * else the catalog's sample) feed the field picker, which inserts {{ trigger.x }} or
 * {{ steps.name.y }} at the cursor, and the context a step test renders its inputs with.
 * Errors from the API (422 details such as steps[0].inputs.phone) are shown beside the
 * element whose data-error-for names that place (window.connector.showErrors).
 */
(function () {
  "use strict";

  var C = window.connector;
  var B = C.builderParts;
  var h = B.h, uid = B.uid, clone = B.clone, field = B.field, slot = B.slot;
  var isObject = B.isObject, markDirty = B.markDirty, markClean = B.markClean;
  var componentSelect = B.componentSelect, usesConnection = B.usesConnection;
  var autoConnection = B.autoConnection, connectionField = B.connectionField;
  var indexCatalog = B.indexCatalog, renderInputs = B.renderInputs, display = B.display;
  var parseTyped = B.parseTyped, closePicker = B.closePicker, initPicker = B.initPicker;
  var resultPanel = B.resultPanel, showResult = B.showResult, testTrigger = B.testTrigger;
  var renderStepList = B.renderStepList;
  var state = B.state, triggers = B.triggers, samples = B.samples, invalid = B.invalid;
  var saved = false, flowName = "", enabled = false;

  // -- the trigger -------------------------------------------------------------------------

  function renderTrigger() {
    var body = document.getElementById("b-trigger-body");
    body.textContent = "";
    if (!isObject(state.def.trigger)) {
      state.def.trigger = {};
    }
    var t = state.def.trigger;
    var component = triggers[t.key];
    var select = componentSelect(["triggers"], t.key, "Choose a trigger…");
    select.id = "b-trigger-key";
    select.addEventListener("change", function () {
      state.def.trigger = select.value ? {key: select.value, inputs: {}} : {};
      samples.trigger = null;
      if (triggers[select.value]) {
        autoConnection(state.def.trigger, triggers[select.value]);
      }
      markDirty();
      renderAll();
      document.getElementById("b-trigger-key").focus();
    });
    body.appendChild(field("Trigger", select, {required: true, place: "trigger.key",
      help: component ? component.help : "What starts a run, grouped by app."}));
    body.appendChild(slot("trigger", uid("bf")));
    if (!t.key) {
      return;
    }
    if (!component) {
      body.appendChild(h("p", {"class": "notice warn", text: "The trigger " + t.key +
        " is not installed here; the flow keeps it as it is."}));
      return;
    }
    var row = h("div", {"class": "fields-row"});
    if (usesConnection(component)) {
      row.appendChild(connectionField(t, component, "trigger"));
    }
    if (component.type === "poll") {
      var every = h("input", {type: "number", min: 5, max: 86400, step: 1, id: "b-poll"});
      every.value = display(t.poll_interval);
      every.addEventListener("input", function () {
        var v = parseTyped(every.value, {type: "Integer"});
        if (v === undefined) {
          delete t.poll_interval;
        } else {
          t.poll_interval = v;
        }
        markDirty();
      });
      row.appendChild(field("Check every (seconds)", every, {place: "trigger.poll_interval",
        help: "How often the service is asked for new items; empty takes the default."}));
    }
    if (row.childNodes.length) {
      body.appendChild(row);
    }
    if (component.inputs.length) {
      body.appendChild(renderInputs(component, t, "trigger", {mapping: false, visible: []}));
    } else {
      body.appendChild(slot("trigger.inputs", uid("bf")));
    }
    if (saved && component.type === "webhook" && state.data.flow && state.data.flow.webhook_url) {
      body.appendChild(h("p", {"class": "help"}, ["Webhook URL: ",
        h("code", {"class": "wrap", text: state.data.flow.webhook_url})]));
    }
    var panel = resultPanel();
    var button = h("button", {type: "button", id: "b-test-trigger", text: "Test trigger"});
    button.addEventListener("click", function () {
      testTrigger(button, panel, document.getElementById("b-trigger"));
    });
    var kind = component.type === "poll" ? "Asks the service for recent items; records nothing." :
      "Shows the trigger's sample item: real ones arrive once the flow is on.";
    body.appendChild(h("div", {"class": "test-row"}, [button, h("span", {"class": "help", text: kind})]));
    body.appendChild(panel);
    if (samples.trigger) {
      showResult(panel, "ok", "The sample kept from the last test:", samples.trigger);
    }
  }

  // -- the page ----------------------------------------------------------------------------

  function renderExtra() {
    var notes = [];
    var of = state.def.on_failure;
    if (isObject(of) && of.pause_after) {
      notes.push("pause after " + of.pause_after + " failed runs in a row");
    }
    if (isObject(of) && of.error_flow) {
      notes.push("error flow " + of.error_flow);
    }
    if (state.def.concurrency) {
      notes.push("at most " + state.def.concurrency + " runs at once");
    }
    var known = {name: 1, description: 1, trigger: 1, steps: 1, on_failure: 1, concurrency: 1,
                 enabled: 1};
    Object.keys(state.def).forEach(function (k) {
      if (!known[k]) {
        notes.push(k);
      }
    });
    var el = document.getElementById("b-extra");
    el.hidden = !notes.length;
    el.textContent = notes.length ? "Kept as they are: " + notes.join("; ") +
      (saved ? " (the flow's page changes the failure settings)." : ".") : "";
  }

  function renderAll() {
    closePicker();
    renderTrigger();
    var steps = document.getElementById("b-steps");
    steps.textContent = "";
    if (!Array.isArray(state.def.steps)) {
      state.def.steps = [];
    }
    steps.appendChild(h("h2", {"class": "section", text: "Then do this"}));
    steps.appendChild(renderStepList(state.def.steps, "steps", {mapping: true, visible: [], loop: null}, ""));
    renderExtra();
    Object.keys(invalid).forEach(function (place) {
      var el = slotFor(state.form, place);
      if (el) {
        el.textContent = invalid[place];
      } else {
        delete invalid[place];  // its field is gone
      }
    });
  }

  function slotFor(container, place) {
    var all = container.querySelectorAll("[data-error-for]");
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-error-for") === place) {
        return all[i];
      }
    }
    return null;
  }

  /* showErrors, with each place the page has no slot for moved to its nearest parent's. */
  function placeErrors(container, err) {
    var details = {};
    Object.keys(err.details || {}).forEach(function (place) {
      var target = place, rest = "";
      while (target && target !== "_body" && !slotFor(container, target)) {
        var m = /^(.*?)(\.[^.[\]]+|\[\d+\])$/.exec(target);
        if (!m || !m[1]) {
          target = null;
          break;
        }
        rest = m[2] + rest;
        target = m[1];
      }
      var messages = [].concat(err.details[place]);
      if (target && rest) {
        messages = messages.map(function (msg) { return rest.replace(/^\./, "") + ": " + msg; });
      }
      var key = target || place;
      details[key] = (details[key] || []).concat(messages);
    });
    container.querySelectorAll("details.more-inputs").forEach(function (more) {
      Object.keys(details).forEach(function (key) {
        if (!more.open && slotFor(more, key)) {
          more.open = true;  // the field named is among the optional ones
        }
      });
    });
    C.showErrors(container, {details: details, message: err.message});
  }

  function payload() {
    var body = clone(state.def);
    body.name = document.getElementById("b-name").value.trim();
    var description = document.getElementById("b-description").value.trim();
    if (description) {
      body.description = description;
    } else {
      delete body.description;
    }
    delete body.enabled;
    return body;
  }

  function setState(flow) {
    enabled = flow.enabled;
    var badge = document.getElementById("b-state");
    badge.textContent = "";
    badge.appendChild(flow.paused_reason ? h("span", {"class": "badge state-paused",
      title: flow.paused_reason, text: "paused"}) : h("span", {"class": "badge " +
      (enabled ? "state-on" : "state-off"), text: enabled ? "on" : "off"}));
    var button = document.getElementById("b-switch");
    button.hidden = false;
    button.textContent = enabled ? "Switch off" : "Switch on";
    button.className = enabled ? "" : "primary-outline";
  }

  function save() {
    if (Object.keys(invalid).length) {
      var err = {details: clone(invalid), message: "Some fields are not valid."};
      placeErrors(state.form, err);
      return Promise.reject(err);
    }
    var body = payload();
    var request = saved ? C.api("PUT", "/flows/" + encodeURIComponent(flowName), body) :
      C.api("POST", "/flows", body);
    return request.then(function (flow) {
      var first = !saved;
      saved = true;
      flowName = flow.name;
      state.data.flow = {name: flow.name, enabled: flow.enabled, paused_reason: flow.paused_reason,
                   webhook_url: flow.webhook_url, definition: flow.definition};
      markClean();
      C.clearErrors(state.form);
      setState(flow);
      if (first) {
        var nameInput = document.getElementById("b-name");
        nameInput.readOnly = true;
        document.getElementById("b-title").textContent = "Edit " + flow.name;
        document.title = "Edit " + flow.name + " · connector";
        window.history.replaceState(null, "", state.form.getAttribute("data-flow-url") +
          encodeURIComponent(flow.name) + "/edit");
        var crumbs = document.querySelector(".crumbs");
        crumbs.appendChild(document.createTextNode(" "));
        crumbs.appendChild(h("a", {id: "b-view", href: state.form.getAttribute("data-flow-url") +
          encodeURIComponent(flow.name), text: flow.name}));
        crumbs.appendChild(document.createTextNode(" /"));
        renderTrigger();  // the webhook URL is known now
      }
      return flow;
    }, function (err) {
      if (err.status === 409 && !saved && (!err.details || !Object.keys(err.details).length)) {
        err.details = {name: [err.message]};
      }
      throw err;
    });
  }

  function showSaveError(err) {
    placeErrors(state.form, err);
    var rest = state.form.querySelector(".form-error");
    C.flash(rest && rest.textContent ? rest.textContent :
      "Not saved: fix the fields marked in red.", "error", true);
  }

  function onSubmit(event) {
    event.preventDefault();
    event.stopPropagation();
    var buttons = [document.getElementById("b-save"), state.form.querySelector(".builder-foot button")];
    buttons.forEach(function (b) { b.disabled = true; });
    save().then(function (flow) {
      C.flash("Flow " + flow.name + " saved." + (flow.enabled ?
        " It is on: new runs use this version." : " Switch it on to run it."), "ok", true);
    }, showSaveError).then(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  function onSwitch() {
    var button = document.getElementById("b-switch");
    var on = !enabled;
    var ready = state.dirty ? save() : Promise.resolve();
    C.busy(button, ready.then(function () {
      return C.api("POST", "/flows/" + encodeURIComponent(flowName) + (on ? "/enable" : "/disable"));
    })).then(function (answer) {
      setState(answer);
      var notes = (answer.warnings || []).slice();
      Object.keys(answer.setup || {}).forEach(function (key) {
        notes.push("Paste into the sender: " + key + " = " + answer.setup[key]);
      });
      C.flash("Flow " + flowName + " switched " + (on ? "on" : "off") + "." +
        (notes.length ? " " + notes.join(" ") : ""), notes.length ? "warn" : "ok", true);
    }, function (err) {
      if (err.details && Object.keys(err.details).length) {
        showSaveError(err);
      } else {
        C.flash("Could not switch " + flowName + " " + (on ? "on" : "off") + ": " +
                err.message, "error", true);
      }
    });
  }

  function init() {
    state.form = document.getElementById("builder");
    var block = document.getElementById("builder-data");
    if (!state.form || !block) {
      return;
    }
    state.data = JSON.parse(block.textContent);
    indexCatalog();
    if (state.data.flow) {
      state.def = clone(state.data.flow.definition);
      saved = true;
      flowName = state.data.flow.name;
      enabled = state.data.flow.enabled;
    } else {
      state.def = {name: "", trigger: {}, steps: [{inputs: {}}]};
    }
    document.getElementById("b-description").value = state.def.description || "";
    ["b-name", "b-description"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", markDirty);
    });
    state.form.addEventListener("submit", onSubmit);
    document.getElementById("b-switch").addEventListener("click", onSwitch);
    window.addEventListener("beforeunload", function (event) {
      if (state.dirty) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
    initPicker();
    renderAll();
    state.form.setAttribute("data-ready", "true");
  }

  B.renderAll = renderAll;
  B.placeErrors = placeErrors;

  // the page's API for tests and for people poking at it in the console
  window.connector.builder = {
    definition: function () { return payload(); },
    samples: function () { return clone(samples); }
  };

  document.addEventListener("DOMContentLoaded", init);
}());
