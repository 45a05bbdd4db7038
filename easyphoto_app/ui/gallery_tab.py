"""Gallery tab: browse a user's images by date, see parameters, delete, export as zip."""

from __future__ import annotations

import gradio as gr

from easyphoto_app import gallery
from easyphoto_app.errors import UserError
from easyphoto_app.ui.common import Context, friendly
from easyphoto_app.workspace import validate_user_id


def build(ctx: Context) -> dict:
    with gr.Row():
        user = gr.Dropdown(ctx.ws.list_users(), label="User", allow_custom_value=True, elem_id="gallery-user")
        day = gr.Dropdown([], label="Date", info="Empty: all dates.", allow_custom_value=True)
        refresh = gr.Button("Refresh", size="sm")
    images = gr.Gallery(label="Images", columns=5, height=420, elem_id="gallery-images")
    selected = gr.State(None)
    shown = gr.State([])  # the listed images (gallery.Item), their parameters read once per listing
    params = gr.Textbox(
        label="Parameters of the selected image (WebUI PNG Info format)",
        lines=3,
        interactive=False,
        elem_id="gallery-params",
    )
    likeness = gr.Markdown(elem_id="gallery-likeness")
    with gr.Row():
        delete = gr.Button("Delete selected", variant="stop", size="sm", elem_id="gallery-delete")
        export = gr.Button("Export all as zip", variant="primary", elem_id="gallery-export")
    download = gr.File(label="Export", elem_id="gallery-download")

    @friendly
    def load(user_v, day_v):
        if not user_v:
            return [], [], gr.update(choices=[]), gr.update(choices=ctx.ws.list_users())
        user_v = validate_user_id(user_v)
        items = gallery.list_images(ctx.ws, user_v, day_v or None)
        return (
            [(str(i.path), gallery.caption(i)) for i in items],
            items,
            gr.update(choices=[""] + gallery.dates(ctx.ws, user_v)),
            gr.update(choices=ctx.ws.list_users()),
        )

    @friendly
    def on_select(items, user_v, evt: gr.SelectData):
        if evt.index >= len(items):
            return None, "", ""
        item = items[evt.index]
        return str(item.path), item.parameters, gallery.likeness_line(ctx.ws, validate_user_id(user_v), item)

    @friendly
    def on_delete(user_v, path, day_v):
        if not path:
            raise UserError("Click an image first.")
        gallery.delete_image(ctx.ws, validate_user_id(user_v), path)
        items, shown_items = load(user_v, day_v)[:2]
        # back to the grid: no image zoomed or highlighted, since nothing is selected any more
        return gr.update(value=items, selected_index=None), shown_items, None, "", ""

    @friendly
    def on_export(user_v):
        return str(gallery.export_zip(ctx.ws, validate_user_id(user_v)))

    listing = [images, shown, day, user]
    refresh.click(load, [user, day], listing)
    user.change(load, [user, day], listing)
    day.change(load, [user, day], listing)
    images.select(on_select, [shown, user], [selected, params, likeness])
    delete.click(on_delete, [user, selected, day], [images, shown, selected, params, likeness])
    export.click(on_export, user, download, api_name="export")
    return {"on_show": (lambda: gr.update(choices=ctx.ws.list_users()), user)}
