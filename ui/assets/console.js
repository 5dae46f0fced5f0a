// Meridian console: the only script. Pages work without it; it adds conveniences:
// - inputs with data-remember keep their last value (your name) in localStorage;
// - Ctrl+Enter (or Cmd+Enter) in the SQL editor runs the query;
// - SQL examples fill the editor instead of navigating, so you can edit before running.
(function () {
  "use strict";
  function remember() {
    document.querySelectorAll("input[data-remember]").forEach(function (input) {
      var key = "meridian." + input.getAttribute("data-remember");
      try {
        if (!input.value) { input.value = window.localStorage.getItem(key) || ""; }
        input.addEventListener("change", function () { window.localStorage.setItem(key, input.value); });
      } catch (e) { /* storage disabled: nothing to remember */ }
    });
  }
  function sqlEditor() {
    var editor = document.getElementById("sql-editor");
    if (!editor) { return; }
    editor.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        editor.form.submit();
      }
    });
    document.querySelectorAll("a[data-sql]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        editor.value = link.getAttribute("data-sql");
        editor.focus();
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { remember(); sqlEditor(); });
})();
